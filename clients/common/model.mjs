// What every client needs besides ONNX Runtime: the model's own description (its `metadata_props`, read from the
// .onnx bytes with a few lines of protobuf), WAV decoding, and turning one waveform into the model's inputs.
// Plain ES module, no dependencies: Node and browsers import the same file.

const TEXT = new TextDecoder();

function varint(bytes, pos) {
  let value = 0, scale = 1, byte;
  do {
    byte = bytes[pos++];
    value += (byte & 0x7f) * scale;  // Multiplication, not shifts: lengths above 2^31 stay exact.
    scale *= 128;
  } while (byte & 0x80);
  return [value, pos];
}

function fields(bytes, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = varint(bytes, pos);
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) { [, pos] = varint(bytes, pos); }
    else if (wire === 1) { pos += 8; }
    else if (wire === 5) { pos += 4; }
    else if (wire === 2) {
      let length;
      [length, pos] = varint(bytes, pos);
      visit(field, pos, pos + length);
      pos += length;
    } else { throw new Error(`not an ONNX model (protobuf wire type ${wire})`); }
  }
}

// ModelProto.metadata_props (field 14): key -> value, our keys JSON-decoded without their "toolchain." prefix.
export function modelMetadata(bytes) {
  const meta = {};
  fields(bytes, 0, bytes.length, (field, start, end) => {
    if (field !== 14) return;
    let key = '', value = '';
    fields(bytes, start, end, (f, s, e) => {
      if (f === 1) key = TEXT.decode(bytes.subarray(s, e));
      if (f === 2) value = TEXT.decode(bytes.subarray(s, e));
    });
    if (key.startsWith('toolchain.')) meta[key.slice('toolchain.'.length)] = JSON.parse(value);
  });
  if (!meta.classes || !meta.input_contract) {
    throw new Error('this .onnx has no toolchain audio-model metadata: pass the model.audio.onnx written by ' +
                    '`toolchain export-onnx`');
  }
  return meta;
}

// A WAV file (PCM 8/16/24/32-bit or float 32/64, any channel count) -> {sampleRate, samples: mono Float32Array}.
export function decodeWav(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at) => TEXT.decode(bytes.subarray(at, at + 4));
  if (bytes.length < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') throw new Error('not a RIFF/WAVE file');
  let format = null, data = null;
  for (let pos = 12; pos + 8 <= bytes.length;) {
    const id = tag(pos), size = view.getUint32(pos + 4, true), body = pos + 8;
    if (id === 'fmt ') {
      let code = view.getUint16(body, true);
      if (code === 0xfffe && size >= 26) code = view.getUint16(body + 24, true);  // WAVE_FORMAT_EXTENSIBLE
      format = { code, channels: view.getUint16(body + 2, true), sampleRate: view.getUint32(body + 4, true),
                 bits: view.getUint16(body + 14, true) };
    } else if (id === 'data') {
      data = [body, Math.min(size, bytes.length - body)];
    }
    pos = body + size + (size % 2);
  }
  if (!format || !data) throw new Error('WAV without fmt or data chunk');
  const { code, channels, bits } = format, width = bits / 8, frames = Math.floor(data[1] / (width * channels));
  if (frames < 1) throw new Error('WAV holds no samples');
  const read = {
    '1:8': (p) => (view.getUint8(p) - 128) / 128, '1:16': (p) => view.getInt16(p, true) / 32768,
    '1:24': (p) => ((view.getUint8(p) | (view.getUint8(p + 1) << 8) | (view.getInt8(p + 2) << 16))) / 8388608,
    '1:32': (p) => view.getInt32(p, true) / 2147483648, '3:32': (p) => view.getFloat32(p, true),
    '3:64': (p) => view.getFloat64(p, true),
  }[`${code}:${bits}`];
  if (!read) throw new Error(`unsupported WAV encoding (format ${code}, ${bits} bits): use PCM or float`);
  const samples = new Float32Array(frames);
  for (let i = 0, p = data[0]; i < frames; i++) {
    let sum = 0;
    for (let c = 0; c < channels; c++, p += width) sum += read(p);
    samples[i] = sum / channels;
  }
  return { sampleRate: format.sampleRate, samples };
}

// A band-limited resampler: mono Float32Array at `from` Hz -> at `to` Hz (length ceil(n * to / from), as the Python
// decoder's soxr gives). Windowed sinc (Kaiser, beta 9: ~90 dB stopband), `ZEROS` zero crossings either side, cut
// off at 95 % of the lower Nyquist so nothing above the output's Nyquist folds back. For a rational ratio L/M with
// L <= MAX_PHASES (every common rate pair: 8 kHz -> 22.05 kHz is 441/160) the filter is tabulated per phase.
const ZEROS = 32, ROLLOFF = 0.95, BETA = 9, MAX_PHASES = 4096;

function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; k < 64 && term > 1e-12 * sum; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
  }
  return sum;
}

function gcd(a, b) { while (b) [a, b] = [b, a % b]; return a; }

export function resample(samples, from, to) {
  if (!(Number.isInteger(from) && Number.isInteger(to) && from > 0 && to > 0)) {
    throw new Error(`cannot resample ${from} Hz to ${to} Hz: rates must be positive whole numbers`);
  }
  if (from === to) return samples;
  const g = gcd(from, to), L = to / g, M = from / g;
  const cutoff = ROLLOFF * Math.min(1, to / from) / 2;  // Cycles per input sample.
  const half = Math.ceil(ZEROS / (2 * cutoff));  // Taps either side, in input samples.
  const norm = besselI0(BETA);
  const tap = (u) => {  // The filter at `u` input samples from the output instant.
    if (Math.abs(u) >= half) return 0;
    const x = 2 * cutoff * u;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const r = u / half;
    return 2 * cutoff * sinc * besselI0(BETA * Math.sqrt(1 - r * r)) / norm;
  };
  const taps = 2 * half;
  const table = L <= MAX_PHASES ? new Float32Array(L * taps) : null;
  if (table) {
    for (let p = 0; p < L; p++) {
      for (let j = 0; j < taps; j++) table[p * taps + j] = tap(p / L + half - 1 - j);
    }
  }
  const n = Math.ceil(samples.length * L / M), out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const position = i * M, k0 = Math.floor(position / L), phase = position - k0 * L;  // t = k0 + phase / L.
    let sum = 0;
    for (let j = 0; j < taps; j++) {
      const k = k0 - half + 1 + j;
      if (k < 0 || k >= samples.length) continue;
      sum += samples[k] * (table ? table[phase * taps + j] : tap(phase / L + half - 1 - j));
    }
    out[i] = sum;
  }
  return out;
}

// One waveform (mono, at the model's rate) -> the feeds of model.audio.onnx (batch of one; trim on by default).
export function feeds(ort, samples) {
  return {
    waveform: new ort.Tensor('float32', samples, [1, samples.length]),
    lengths: new ort.Tensor('int64', BigInt64Array.from([BigInt(samples.length)]), [1]),
  };
}

// probabilities (Float32Array) -> {label, confidence}.
export function top(classes, probabilities) {
  let best = 0;
  for (let i = 1; i < probabilities.length; i++) if (probabilities[i] > probabilities[best]) best = i;
  return { label: classes[best], confidence: probabilities[best] };
}
