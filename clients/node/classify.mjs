#!/usr/bin/env node
// Classify WAV files with a toolchain model.audio.onnx, no Python: the model computes its own log-mel features.
//   node clients/node/classify.mjs MODEL.audio.onnx FILE.wav... > predictions.csv
// Any sample rate: a file not at the model's (it is in the model: `sample_rate` below) is resampled with a
// band-limited filter (`resample`, within 1 % RMS of the Python decoder's soxr). Writes CSV
// file,label,confidence,error,prob_<class>... to stdout; a file that cannot be read gets an error row. Exit 0 when
// every file was classified, 1 when some were not, 2 on a usage or model error.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { decodeWav, feeds, modelMetadata, resample, top } from '../common/model.mjs';

const ort = createRequire(import.meta.url)('onnxruntime-node');
const csv = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));

async function main(argv) {
  if (argv.length < 2 || argv[0] === '--help' || argv[0] === '-h') {
    console.error('usage: node classify.mjs MODEL.audio.onnx FILE.wav...  (CSV on stdout)');
    return argv[0] === '--help' || argv[0] === '-h' ? 0 : 2;
  }
  const [modelPath, ...files] = argv;
  let bytes, meta, session;
  try {
    bytes = readFileSync(modelPath);
    meta = modelMetadata(bytes);
    session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  } catch (err) {
    console.error(`error: cannot load model ${modelPath}: ${err.message}`);
    return 2;
  }
  const rate = meta.input_contract.sample_rate;
  console.log(['file', 'label', 'confidence', 'error', ...meta.classes.map((c) => `prob_${c}`)].map(csv).join(','));
  let failed = 0;
  for (const file of files) {
    try {
      const wav = decodeWav(readFileSync(file));
      const out = await session.run(feeds(ort, resample(wav.samples, wav.sampleRate, rate)), ['probabilities']);
      const p = out.probabilities.data;
      const { label, confidence } = top(meta.classes, p);
      console.log([file, label, confidence.toFixed(7), '', ...Array.from(p, (x) => x.toFixed(7))].map(csv).join(','));
    } catch (err) {
      failed += 1;
      console.log([file, '', '', err.message, ...meta.classes.map(() => '')].map(csv).join(','));
    }
  }
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
