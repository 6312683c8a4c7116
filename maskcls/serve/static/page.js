// The maskcls page: send one photo (a file or a webcam snapshot) to POST /predict and draw the
// answer. Everything drawn on the canvas is also written into #faces, so the text can be read
// (and tested) without reading pixels. No external fetches: the page's content policy forbids them.
"use strict";

const $ = (id) => document.getElementById(id);
const HEADS = ["mask", "gender", "age"];
// Box colours by mask state: worn, worn wrongly, none.
const MASK_COLOURS = { "wear": "#1a9c3a", "incorrect": "#e08a00", "not wear": "#d0302a" };

let photo = null;   // the Blob that Predict sends
let picture = null; // what the canvas draws under the boxes (an ImageBitmap or an <img>)
let stream = null;  // the camera, while it is on

function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

// The two lines of a face's label: the same text on the canvas and in #faces.
function labelLines(face, index) {
  const heads = HEADS.map((head) => `${head} ${face[head].label} ${percent(face[head].probs[face[head].label])}`);
  return [`#${index + 1} ${face.class_name}`, heads.join(" · ")];
}

async function decodePicture(blob) {
  if (window.createImageBitmap) {
    return createImageBitmap(blob); // applies the photo's EXIF orientation, as the server's decoder does
  }
  const img = new Image();
  img.src = URL.createObjectURL(blob);
  await img.decode();
  return img;
}

function drawPicture() {
  const canvas = $("canvas");
  canvas.width = picture.width;
  canvas.height = picture.height;
  canvas.getContext("2d").drawImage(picture, 0, 0);
}

function drawFaces(faces, image) {
  if (!picture) return;
  drawPicture();
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  // Boxes are in the server's pixels; scale them should the browser decode another size.
  const sx = canvas.width / image.width;
  const sy = canvas.height / image.height;
  const font = Math.max(12, Math.round(Math.min(canvas.width, canvas.height) / 32));
  ctx.font = `${font}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.lineWidth = Math.max(2, font / 6);
  faces.forEach((face, i) => {
    const [x0, y0, x1, y1] = face.box;
    const colour = MASK_COLOURS[face.mask.label] || "#3060d0";
    ctx.strokeStyle = colour;
    ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    const lines = labelLines(face, i);
    const width = Math.max(...lines.map((line) => ctx.measureText(line).width)) + 8;
    const height = lines.length * (font + 4) + 4;
    // The label sits above the box, or inside it when the box touches the top edge.
    const top = y0 * sy >= height ? y0 * sy - height : y0 * sy;
    const left = Math.min(Math.max(0, x0 * sx), Math.max(0, canvas.width - width));
    ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
    ctx.fillRect(left, top, width, height);
    ctx.fillStyle = "#fff";
    lines.forEach((line, k) => ctx.fillText(line, left + 4, top + 4 + k * (font + 4)));
    ctx.fillStyle = colour;
    ctx.fillRect(left, top, 4, height);
  });
}

function listFaces(faces) {
  const list = $("faces");
  list.replaceChildren();
  faces.forEach((face, i) => {
    const item = document.createElement("li");
    item.dataset.classId = String(face.class_id);
    item.dataset.className = face.class_name;
    item.dataset.box = face.box.join(",");
    item.dataset.detector = face.detector;
    HEADS.forEach((head) => {
      item.dataset[head] = face[head].label;
      item.dataset[`${head}Prob`] = String(face[head].probs[face[head].label]);
    });
    labelLines(face, i).forEach((line, k) => {
      const span = document.createElement("span");
      span.className = `line${k + 1}`;
      span.textContent = line;
      item.append(span);
    });
    list.append(item);
  });
  if (!faces.length) {
    const item = document.createElement("li");
    item.className = "none";
    item.textContent = "No face found in this photo.";
    list.append(item);
  }
}

function cell(tag, text, className) {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function tableProbs(faces) {
  const head = $("probs").tHead;
  const body = $("probs").tBodies[0];
  head.replaceChildren();
  body.replaceChildren();
  if (!faces.length) return;
  // Two header rows: each head over its labels.
  const groups = document.createElement("tr");
  const labels = document.createElement("tr");
  const corner = cell("th", "face");
  corner.rowSpan = 2;
  groups.append(corner);
  HEADS.forEach((h) => {
    const names = Object.keys(faces[0][h].probs);
    const group = cell("th", h);
    group.colSpan = names.length;
    groups.append(group);
    names.forEach((label) => labels.append(cell("th", label)));
  });
  head.append(groups, labels);
  faces.forEach((face, i) => {
    const row = document.createElement("tr");
    row.append(cell("td", `#${i + 1}`));
    HEADS.forEach((h) => Object.entries(face[h].probs).forEach(([label, p]) => {
      row.append(cell("td", percent(p), label === face[h].label ? "top" : ""));
    }));
    body.append(row);
  });
}

function showLatency(latency, roundTrip) {
  const parts = ["decode", "detect", "classify", "total"].filter((k) => k in latency).map((k) => `${k} ${latency[k].toFixed(1)} ms`);
  $("latency").textContent = `server: ${parts.join(" · ")}; round trip ${roundTrip.toFixed(0)} ms`;
}

async function predict() {
  if (!photo) return;
  $("predict").disabled = true;
  setStatus("Sending the photo…", "busy");
  const form = new FormData();
  form.append("file", photo, "photo");
  const sent = performance.now();
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) {
      throw new Error(typeof answer.detail === "string" ? answer.detail : `HTTP ${response.status}`);
    }
    const roundTrip = performance.now() - sent;
    drawFaces(answer.faces, answer.image);
    listFaces(answer.faces);
    tableProbs(answer.faces);
    showLatency(answer.latency_ms, roundTrip);
    const count = answer.faces.length;
    setStatus(`Result: ${count} face${count === 1 ? "" : "s"}, ${answer.latency_ms.total.toFixed(1)} ms on the server.`, "done");
  } catch (error) {
    setStatus(`Error: ${error.message}`, "error");
  } finally {
    $("predict").disabled = false;
  }
}

async function choose(blob) {
  photo = blob;
  try {
    picture = await decodePicture(blob);
    drawPicture();
  } catch (error) {
    picture = null; // the browser cannot show it; the server still says what it thinks of it
  }
  $("faces").replaceChildren();
  tableProbs([]);
  $("latency").textContent = "–";
  $("predict").disabled = false;
  setStatus("Photo ready: press Predict.", "ready");
}

async function startCamera() {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    $("camera").disabled = true;
    $("camera-note").textContent = `Camera unavailable (${error.name}).`;
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("canvas").hidden = true;
  $("camera").hidden = true;
  $("snap").hidden = false;
}

function stopCamera() {
  stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("video").hidden = true;
  $("canvas").hidden = false;
  $("camera").hidden = false;
  $("snap").hidden = true;
}

async function snapshot() {
  const video = $("video");
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  stopCamera();
  const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.92));
  await choose(blob);
  await predict();
}

// The camera button shows only where the browser can reach a camera at all.
async function setUpCamera() {
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) {
    $("camera-controls").hidden = true;
    $("camera-note").textContent = "No camera access here: browsers allow it on localhost, 127.0.0.1 or HTTPS pages only.";
    return;
  }
  try {
    const devices = await media.enumerateDevices();
    if (!devices.some((d) => d.kind === "videoinput")) {
      $("camera").disabled = true;
      $("camera-note").textContent = "No camera found.";
    }
  } catch (error) {
    // enumerateDevices refused: leave the button; getUserMedia will say what is wrong
  }
}

async function showModel() {
  try {
    const info = await (await fetch("/version")).json();
    $("model").textContent = `Model: ${info.model_id} (${info.backend}${info.int8 ? ", int8" : ""}).`;
  } catch (error) {
    $("model").textContent = "Model: unknown.";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) choose(event.target.files[0]);
  });
  $("predict").addEventListener("click", predict);
  $("camera").addEventListener("click", startCamera);
  $("snap").addEventListener("click", snapshot);
  setUpCamera();
  showModel();
});
