// The page: load model.audio.onnx (?model=URL, default ./model.audio.onnx), decode a picked or dropped audio file
// (WAV as the Node client does, any other format with Web Audio) at the model's sample rate, run it with
// onnxruntime-web (WASM, one thread), show label and bars.
// Everything happens in this browser; the model computes its own log-mel features.
import * as ort from './node_modules/onnxruntime-web/dist/ort.min.mjs';
import { decodeWav, feeds, modelMetadata, resample, top } from '../common/model.mjs';

ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.wasm.numThreads = 1;  // Threads need cross-origin isolation, which a plain static server does not give.

const $ = (id) => document.getElementById(id);
const modelUrl = new URLSearchParams(location.search).get('model') || 'model.audio.onnx';
let session, meta;

function fail(message) {
  $('status').className = 'error';
  $('status').textContent = message;
  document.body.dataset.state = 'error';
}

async function loadModel() {
  const response = await fetch(modelUrl);
  if (!response.ok) throw new Error(`cannot fetch ${modelUrl}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  meta = modelMetadata(bytes);
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  const sha = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], logSeverityLevel: 3 });
  $('model').textContent = `${modelUrl.split('/').pop()} (${meta.arch}, ${meta.classes.length} classes, ` +
    `${meta.input_contract.sample_rate} Hz) sha256 ${sha}`;
  document.body.dataset.sha256 = sha;
  $('audio').disabled = false;
  document.body.dataset.state = 'ready';
}

// Any format the browser decodes -> mono Float32Array at the model's rate. A WAV file is decoded and resampled
// exactly as the Node client does (same results); other formats by decodeAudioData, which resamples to the
// context's rate with the browser's own resampler; channels are averaged.
async function decode(file) {
  const rate = meta.input_contract.sample_rate;
  const bytes = new Uint8Array(await file.arrayBuffer());
  let wav = null;
  try { wav = decodeWav(bytes); } catch { /* Not a WAV this decoder reads: Web Audio's turn. */ }
  if (wav) return resample(wav.samples, wav.sampleRate, rate);
  const context = new OfflineAudioContext(1, 1, rate);
  const audio = await context.decodeAudioData(bytes.buffer);
  const mono = new Float32Array(audio.length);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const channel = audio.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / audio.numberOfChannels;
  }
  return mono;
}

function clear() {
  $('label').textContent = '';
  $('bars').replaceChildren();
  for (const key of ['label', 'confidence', 'file']) delete document.body.dataset[key];
}

async function classify(file) {
  clear();  // A new file: the previous result leaves the screen now, whatever happens to this one.
  document.body.dataset.state = 'running';
  $('status').className = '';
  $('status').textContent = `classifying ${file.name}...`;
  try {
    const samples = await decode(file);
    if (!samples.length) throw new Error('the file holds no audio');
    const out = await session.run(feeds(ort, samples), ['probabilities']);
    const p = Array.from(out.probabilities.data);
    const { label, confidence } = top(meta.classes, p);
    $('status').textContent = `${file.name}: ${(samples.length / meta.input_contract.sample_rate).toFixed(2)} s`;
    $('label').textContent = `${label} (${(confidence * 100).toFixed(1)} %)`;
    $('bars').replaceChildren(...meta.classes.map((name, i) => {
      const row = document.createElement('div');
      row.className = 'row';
      row.innerHTML = `<span></span><div class="bar" style="width:${(p[i] * 100).toFixed(1)}%"></div><span></span>`;
      row.children[0].textContent = name;
      row.children[2].textContent = `${(p[i] * 100).toFixed(1)} %`;
      return row;
    }));
    Object.assign(document.body.dataset, { state: 'done', label, confidence: String(confidence), file: file.name });
  } catch (err) {
    clear();
    fail(`${file.name}: ${err.message || err}`);
  }
}

$('audio').addEventListener('change', (e) => e.target.files[0] && classify(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (session && e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
loadModel().catch((err) => fail(`cannot load the model: ${err.message || err}`));
