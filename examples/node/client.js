#!/usr/bin/env node
// Run a `frugalvision export` graph from Node (onnxruntime-node, jpeg-js, pngjs; no native image library).
//
//   node client.js model.onnx photo.jpg [more.png ...]          one line per image, and the map
//   node client.js --json model.onnx photo.jpg ...               one JSON object per line
//
// The graph crops the centre square and resizes it itself, and its outputs hold the decision ("unknown" = none
// of these), the runner-up, the probabilities and every class's map. This file only decodes the image as
// `frugalvision predict` does: upright (EXIF orientation), transparency composited on white, and a large JPEG
// at reduced scale. predict asks libjpeg for a 1/2, 1/4 or 1/8 scaled decode; jpeg-js cannot, so the full
// decode is averaged over the same k x k blocks, which is what the scaled decode approximates.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');
const jpeg = require('jpeg-js');
const { PNG } = require('pngjs');

function exifOrientation(buf) {
  // The Orientation tag (0x0112) of a JPEG's APP1 Exif segment; 1 when absent.
  let i = 2;
  while (i + 4 < buf.length && buf[i] === 0xff) {
    const marker = buf[i + 1];
    const len = buf.readUInt16BE(i + 2);
    if (marker === 0xe1 && buf.toString('latin1', i + 4, i + 10) === 'Exif\0\0') {
      const t = i + 10;
      const le = buf.toString('latin1', t, t + 2) === 'II';
      const u16 = (o) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
      const u32 = (o) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
      const ifd = t + u32(t + 4);
      for (let e = 0, n = u16(ifd); e < n; e++) {
        const entry = ifd + 2 + 12 * e;
        if (u16(entry) === 0x0112) return u16(entry + 8);
      }
      return 1;
    }
    if (marker === 0xda) break; // image data: no more headers
    i += 2 + len;
  }
  return 1;
}

function orient(img, o) {
  // The numpy equivalent in frugalvision.data.decode (_ORIENT) / Pillow's exif_transpose.
  if (o < 2 || o > 8) return img;
  const { width: w, height: h, data } = img;
  const swap = o >= 5;
  const W = swap ? h : w, H = swap ? w : h;
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let sx, sy; // source pixel of output (x, y)
      switch (o) {
        case 2: sx = w - 1 - x; sy = y; break;
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;
        case 4: sx = x; sy = h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = h - 1 - x; break;
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;
        case 8: sx = w - 1 - y; sy = x; break;
      }
      const s = 3 * (sy * w + sx), d = 3 * (y * W + x);
      out[d] = data[s]; out[d + 1] = data[s + 1]; out[d + 2] = data[s + 2];
    }
  }
  return { width: W, height: H, data: out };
}

function decodeJpeg(buf, minSide) {
  const raw = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 2048 });
  let img = { width: raw.width, height: raw.height, data: raw.data };
  if (Math.min(img.width, img.height) >= 2 * minSide) {
    const s = Math.min(Math.floor(img.width / minSide), Math.floor(img.height / minSide));
    const k = [8, 4, 2, 1].find((v) => s >= v);
    img = blockMean(img, k);
  }
  return orient(img, exifOrientation(buf));
}

function blockMean(img, k) {
  // k x k block averages, partial blocks at the edges as libjpeg's ceil(size / k) output.
  const { width: w, height: h, data } = img;
  const W = Math.ceil(w / k), H = Math.ceil(h / k);
  const out = new Uint8Array(W * H * 3);
  for (let Y = 0; Y < H; Y++) {
    for (let X = 0; X < W; X++) {
      let r = 0, g = 0, b = 0, n = 0;
      for (let y = Y * k; y < Math.min(h, Y * k + k); y++) {
        for (let x = X * k; x < Math.min(w, X * k + k); x++) {
          const s = 3 * (y * w + x);
          r += data[s]; g += data[s + 1]; b += data[s + 2]; n++;
        }
      }
      const d = 3 * (Y * W + X);
      out[d] = Math.round(r / n); out[d + 1] = Math.round(g / n); out[d + 2] = Math.round(b / n);
    }
  }
  return { width: W, height: H, data: out };
}

function decodePng(buf) {
  const png = PNG.sync.read(buf); // any bit depth, palette, grey: 8-bit RGBA
  const n = png.width * png.height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = png.data[4 * i + 3];
    for (let c = 0; c < 3; c++) { // composited on white, as predict does
      out[3 * i + c] = Math.round((png.data[4 * i + c] * a + 255 * (255 - a)) / 255);
    }
  }
  return { width: png.width, height: png.height, data: out };
}

function decode(path, minSide) {
  const buf = fs.readFileSync(path);
  if (buf[0] === 0xff && buf[1] === 0xd8) return decodeJpeg(buf, minSide);
  if (buf.toString('latin1', 1, 4) === 'PNG') return decodePng(buf);
  throw new Error(`${path}: this example decodes JPEG and PNG only`);
}

async function main(argv) {
  const json = argv[0] === '--json';
  const [modelPath, ...paths] = json ? argv.slice(1) : argv;
  if (!modelPath || paths.length === 0) {
    console.error('usage: node client.js [--json] model.onnx image [image ...]');
    return 2;
  }
  const session = await ort.InferenceSession.create(modelPath);
  const meta = JSON.parse((await readMetadata(modelPath)));
  const classes = meta.classes;
  for (const path of paths) {
    const img = decode(path, meta.jpeg_min_side);
    const input = new ort.Tensor('uint8', img.data, [1, img.height, img.width, 3]);
    const out = await session.run({ images: input });
    const probs = Array.from(out.probabilities.data);
    const decided = Number(out.decision.data[0]);
    const runner = Number(out.runner_up.data[0]);
    const top = probs.indexOf(Math.max(...probs));
    let map = null;
    if (out.cams && decided >= 0) { // the decided class's map, h x w over the centre square
      const [, , h, w] = out.cams.dims;
      const flat = out.cams.data.slice(decided * h * w, (decided + 1) * h * w);
      map = Array.from({ length: h }, (_, y) => Array.from(flat.slice(y * w, (y + 1) * w)));
    }
    const r = {
      path,
      label: decided >= 0 ? classes[decided] : 'unknown',
      probability: decided >= 0 ? probs[decided] : null,
      most_probable: classes[top], most_probable_probability: probs[top],
      runner_up: classes[runner], runner_up_probability: probs[runner],
      ood_score: out.ood_score ? out.ood_score.data[0] : null,
      map,
    };
    if (json) {
      console.log(JSON.stringify(r));
      continue;
    }
    console.log(r.label === 'unknown'
      ? `${path}: unknown (none of these; most probable ${r.most_probable} ${r.most_probable_probability.toFixed(4)}), `
        + `runner-up ${r.runner_up} ${r.runner_up_probability.toFixed(4)}`
      : `${path}: ${r.label} ${r.probability.toFixed(4)}, runner-up ${r.runner_up} ${r.runner_up_probability.toFixed(4)}`);
    if (map) {
      const all = map.flat(), lo = Math.min(...all), span = Math.max(Math.max(...all) - lo, 1e-12);
      console.log(`  map of ${r.label} (${map.length}x${map[0].length}, scaled to 0..9):`);
      for (const row of map) console.log('  ' + row.map((v) => Math.round((9 * (v - lo)) / span)).join(''));
    }
  }
  return 0;
}

async function readMetadata(modelPath) {
  // onnxruntime-node does not expose custom metadata: read the ModelProto's metadata_props (field 14) directly.
  const buf = fs.readFileSync(modelPath);
  const varint = (pos) => {
    let v = 0, mul = 1, b;
    do { b = buf[pos++]; v += (b & 0x7f) * mul; mul *= 128; } while (b & 0x80);
    return [v, pos];
  };
  let pos = 0;
  while (pos < buf.length) {
    let key; [key, pos] = varint(pos);
    const field = Math.floor(key / 8), type = key & 7;
    if (type === 0) { [, pos] = varint(pos); continue; }
    if (type === 1) { pos += 8; continue; }
    if (type === 5) { pos += 4; continue; }
    if (type !== 2) throw new Error('not an ONNX file');
    let len; [len, pos] = varint(pos);
    if (field === 14) { // StringStringEntryProto { key = 1; value = 2 }
      let p = pos, k = '', v = '';
      while (p < pos + len) {
        let kk; [kk, p] = varint(p);
        let l; [l, p] = varint(p);
        const s = buf.toString('utf8', p, p + l);
        if (kk >> 3 === 1) k = s; else v = s;
        p += l;
      }
      if (k === 'frugalvision') return v;
    }
    pos += len;
  }
  throw new Error(`${modelPath}: no frugalvision metadata (not a frugalvision export?)`);
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err) => {
  console.error(err.message || err);
  process.exitCode = 1;
});
