// The upload page: one photo -> POST v1/predict (multipart) -> the photo with boxed faces and emotion bars;
// one clip -> the same endpoint -> a card per person followed through it, and a frame with its boxes.
// Plain JS, no third-party code. The API key stays in this tab's sessionStorage and goes out only as a
// bearer token to this origin.
"use strict";

const KEY_STORE = "fer_ray.api_key";
const COLORS = {
  angry: "#dc2626", disgust: "#65a30d", fear: "#7c3aed", happy: "#f59e0b",
  sad: "#2563eb", surprise: "#db2777", neutral: "#6b7280",
};
const MAX_SIDE = 640; // preview size in CSS pixels

const $ = (id) => document.getElementById(id);

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, state) {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = state;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return `${resp.status}: ${body.error}`;
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

async function loadModel() {
  const resp = await fetch("v1/model", { headers: authHeaders() });
  if (resp.ok) {
    const info = await resp.json();
    $("model").textContent = "model " + info.model_id;
  } else if (resp.status === 401) {
    $("model").textContent = "this service needs an API key";
  }
}

function loadImage(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => resolve(img); // keeps the URL alive while the image is drawn
    img.onerror = () => { URL.revokeObjectURL(url); resolve(null); }; // e.g. HEIC: boxes on a blank stage
    img.src = url;
  });
}

function loadFrame(file, t) {
  // The clip's frame at t seconds, or null where this browser cannot decode the clip (its codec, say).
  return new Promise((resolve) => {
    const video = document.createElement("video");
    const url = URL.createObjectURL(file);
    const done = (v) => { URL.revokeObjectURL(url); resolve(v); };
    video.muted = true;
    video.preload = "auto";
    video.onloadeddata = () => { video.currentTime = t; };
    video.onseeked = () => {
      const c = document.createElement("canvas");
      c.width = video.videoWidth;
      c.height = video.videoHeight;
      c.getContext("2d").drawImage(video, 0, 0);
      done(c);
    };
    video.onerror = () => done(null);
    setTimeout(() => done(null), 5000);
    video.src = url;
  });
}

function draw(img, result) {
  const canvas = $("canvas");
  const w = result.image_width, h = result.image_height;
  const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#e5e7eb";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height); // the browser applies EXIF orientation too
  ctx.lineWidth = 3;
  ctx.font = "bold 14px system-ui, sans-serif";
  result.faces.forEach((face, i) => {
    if (!face.box) return; // the whole image is the face
    const [x, y, bw, bh] = face.box.map((v) => v * scale);
    const color = COLORS[face.emotion] || "#2563eb";
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, bw, bh);
    const label = `${(face.n ?? i) + 1} ${face.emotion}`;
    const tw = ctx.measureText(label).width + 8;
    ctx.fillStyle = color;
    ctx.fillRect(x - 1.5, Math.max(0, y - 20), tw, 20);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + 3, Math.max(14, y - 5));
  });
}

function faceCard(face, i, note) {
  const li = document.createElement("li");
  li.className = "face";
  const h3 = document.createElement("h3");
  const n = document.createElement("span");
  n.className = "n";
  n.textContent = String(i + 1);
  n.style.background = COLORS[face.emotion] || "";
  h3.append(n, `${face.emotion} ${(100 * face.confidence).toFixed(0)}%`);
  li.append(h3);
  if (note) {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = note;
    li.append(p);
  }
  for (const [emotion, p] of Object.entries(face.probabilities)) {
    const row = document.createElement("div");
    row.className = "bar" + (emotion === face.emotion ? " top" : "");
    const name = document.createElement("span");
    name.textContent = emotion;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.style.background = COLORS[emotion] || "#2563eb";
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(name, track, pct);
    li.append(row);
  }
  return li;
}

async function score(file) {
  if (!file) return;
  setStatus(`Scoring ${file.name} ...`, "busy");
  $("faces").replaceChildren();
  const form = new FormData();
  form.append("file", file, file.name);
  const query = $("whole").checked ? "?whole_image=true" : "";
  let resp;
  try {
    resp = await fetch("v1/predict" + query, { method: "POST", headers: authHeaders(), body: form });
  } catch (err) {
    setStatus(`Request failed: ${err}`, "error");
    return;
  }
  if (!resp.ok) {
    const hint = resp.status === 401 ? " Enter the API key above." : "";
    setStatus(await errorText(resp) + hint, "error");
    return;
  }
  const result = await resp.json();
  if (result.video) {
    await showClip(file, result);
    return;
  }
  const img = await loadImage(file);
  draw(img, result);
  $("faces").replaceChildren(...result.faces.map(faceCard));
  const n = result.faces.length;
  const what = n === 0 ? "no face found" : n === 1 ? "1 face" : `${n} faces`;
  setStatus(`${file.name}: ${what} (${result.image_width}x${result.image_height}).`, "done");
  $("model").textContent = "model " + result.model_id;
}

async function showClip(file, result) {
  // One card per person: the emotion that person shows most, with the mean of each emotion over the clip; the
  // frame where the first person is first seen, with everyone's box in it.
  const v = result.video, tracks = result.tracks;
  const first = tracks.length ? tracks[0].timeline[0] : null;
  const boxes = [];
  tracks.forEach((track, i) => {
    const point = first && track.timeline.find((x) => x.frame_index === first.frame_index);
    if (point) boxes.push({ box: point.box, emotion: point.emotion, n: i });
  });
  const frame = first ? await loadFrame(file, first.timestamp_s) : null;
  draw(frame, { image_width: v.width, image_height: v.height, faces: boxes });
  const cards = tracks.map((track, i) => {
    const span = `${track.start_s.toFixed(1)}-${track.end_s.toFixed(1)} s, ${track.frames} frames`;
    const mean = track.mean_probabilities;
    const face = { emotion: track.dominant_emotion, confidence: mean[track.dominant_emotion], probabilities: mean };
    return faceCard(face, i, `mostly ${track.dominant_emotion}, ${span}; bars: the mean over the clip`);
  });
  $("faces").replaceChildren(...cards);
  const n = tracks.length;
  const who = n === 0 ? "no face found" : n === 1 ? "1 person" : `${n} people`;
  setStatus(`${file.name}: ${who} in ${v.duration_s.toFixed(1)} s (${v.frames_sampled} frames sampled).`, "done");
  $("model").textContent = "model " + result.model_id;
}

function init() {
  const key = $("key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("input", () => {
    if (key.value) sessionStorage.setItem(KEY_STORE, key.value.trim());
    else sessionStorage.removeItem(KEY_STORE);
  });
  key.addEventListener("change", loadModel);
  const input = $("file");
  input.addEventListener("change", () => {
    const file = input.files[0];
    input.value = ""; // so choosing the same file again scores it again
    score(file);
  });
  const drop = $("drop");
  drop.addEventListener("click", (e) => { if (e.target === drop) input.click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) score(e.dataTransfer.files[0]);
  });
  loadModel();
}

init();
