// upres web page: pick an image, upscale it through /v1/upscale, compare with bicubic.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], file: null, zoom: 1, x: 0, y: 0, w: 0, h: 0, urls: [] };

function setStatus(text, isError = false) {
  const el = $("status-text");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

// A server started with --token-file answers 401 until the page sends its token: ask for it,
// keep it for this tab only; a refused token is asked for again, at most TOKEN_TRIES times.
const TOKEN_TRIES = 3;

function authHeaders() {
  const t = sessionStorage.getItem("upres-token");
  return t ? { Authorization: `Bearer ${t}` } : {};
}

// send() makes one request and resolves to an answer with a .status; while the server answers
// 401, ask for the token and send again (bounded). Rejects with "access token refused".
async function withToken(send) {
  let res = await send();
  for (let i = 0; res.status === 401 && i < TOKEN_TRIES; i++) {
    const refused = sessionStorage.getItem("upres-token") !== null;
    sessionStorage.removeItem("upres-token");
    const t = window.prompt(refused ? "Access token refused. Enter this server's access token:"
      : "This server needs its access token:");
    if (!t || !t.trim()) break;
    sessionStorage.setItem("upres-token", t.trim());
    res = await send();
  }
  if (res.status === 401) {
    sessionStorage.removeItem("upres-token");
    throw new Error("access token refused (reload the page to enter it again)");
  }
  return res;
}

async function detailOf(res) { // the server's one-line {"detail": ...}, or the HTTP status
  try { return (await res.json()).detail || `HTTP ${res.status}`; } catch (_) { return `HTTP ${res.status}`; }
}

async function loadModels() {
  const res = await withToken(() => fetch("/v1/models", { headers: authHeaders() }));
  if (!res.ok) throw new Error(await detailOf(res));
  state.models = await res.json();
  const scales = [...new Set(state.models.filter((m) => m.name !== "bicubic")
    .map((m) => m.scale))].sort();
  const sel = $("scale");
  for (const s of scales) sel.add(new Option(`×${s}`, String(s)));
  sel.value = scales.includes(4) ? "4" : String(scales[0]);
  fillModels();
}

function fillModels() {
  const s = Number($("scale").value);
  const sel = $("model");
  sel.innerHTML = "";
  const list = state.models.filter((m) => m.scale === s && m.name !== "bicubic");
  for (const m of list) {
    const psnr = m.psnr && m.psnr.Set14 ? ` · Set14 ${m.psnr.Set14.toFixed(2)} dB` : "";
    const speed = m.cpu_ms ? ` · ${Math.round(m.cpu_ms)} ms/720p` : "";
    sel.add(new Option(`${m.name}${psnr}${speed}`, m.name));
  }
  const def = list.find((m) => m.name === "auto") || list.find((m) => m.name === `x${s}`);
  if (def) sel.value = def.name;
  showNote();
}

function currentModel() {
  const s = Number($("scale").value);
  return state.models.find((x) => x.name === $("model").value && x.scale === s);
}

function showNote() {
  const m = currentModel();
  $("model-note").textContent = m ? (m.summary || m.notes || "") : "";
  $("denoise-box").hidden = !(m && m.denoise);
}

function pick(file) {
  if (!file) return;
  state.file = file;
  $("picked").textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KB)`;
  $("go").disabled = false;
}

// POST the file once; resolves to {status, blob, ...} whatever the status; reports upload
// progress as 0..1.
function upscaleRequest(file, model, scale, format, onUpload, denoise) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const q = new URLSearchParams({ model, scale: String(scale), denoise });
    if (format) q.set("format", format); // "": the server's default (PNG; TIFF for scientific TIFF)
    xhr.open("POST", `/v1/upscale?${q}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = "blob";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onUpload) onUpload(e.loaded / e.total); };
    xhr.upload.onload = () => { if (onUpload) onUpload(1); }; // small uploads may skip progress
    xhr.onload = () => resolve({ status: xhr.status, blob: xhr.response,
      denoise: xhr.getResponseHeader("X-Upres-Denoise"),
      retryAfter: xhr.getResponseHeader("Retry-After") });
    xhr.onerror = () => reject(new Error("the server could not be reached"));
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}

// Upscale through the API, asking for the token on 401; rejects with the server's detail.
async function upscale(file, model, scale, format, onUpload, denoise = "auto") {
  const res = await withToken(() => upscaleRequest(file, model, scale, format, onUpload, denoise));
  if (res.status === 200) return res;
  let detail = `HTTP ${res.status}`;
  try { detail = JSON.parse(await res.blob.text()).detail || detail; } catch (_) { /* not JSON */ }
  if (res.status === 503) detail += ` (retry in ${res.retryAfter || "a few"} s)`;
  throw new Error(detail);
}

async function run() {
  if (!state.file) return;
  const model = $("model").value, scale = Number($("scale").value), format = $("format").value;
  $("go").disabled = true;
  const bar = $("progress");
  bar.hidden = false; bar.value = 0;
  const t0 = performance.now();
  let timer = null;
  try {
    setStatus("Uploading…");
    const result = await upscale(state.file, model, scale, format, (f) => {
      bar.value = Math.round(f * 100);
      if (f >= 1 && !timer) {
        bar.removeAttribute("value"); // indeterminate while the server works
        timer = setInterval(() => setStatus(
          `Upscaling with ${model}… ${((performance.now() - t0) / 1000).toFixed(1)} s`), 200);
      }
    }, $("denoise-box").hidden ? "auto" : $("denoise").value);
    clearInterval(timer); timer = null;
    const note = await show(result.blob, model, scale, format);
    const used = result.denoise !== null ? ` Clean-up strength ${result.denoise}.` : "";
    setStatus(`Done in ${((performance.now() - t0) / 1000).toFixed(1)} s.${used}${note}`);
  } catch (err) {
    clearResult(); // no earlier result (nor its Download link) under the error
    setStatus(`Failed: ${err.message}`, true);
  } finally {
    clearInterval(timer);
    bar.hidden = true;
    $("go").disabled = false;
  }
}

function loadImg(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = reject;
    img.src = url;
  });
}

// Hide the result and let go of its images and Download link.
function clearResult() {
  for (const u of state.urls) URL.revokeObjectURL(u);
  state.urls = [];
  state.w = state.h = 0;
  $("result").hidden = true;
  $("download").removeAttribute("href");
  for (const id of ["img-before", "img-after"]) $(id).removeAttribute("src");
  $("result-info").textContent = "";
}

const MEDIA_EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp",
  "image/tiff": "tiff", "image/bmp": "bmp" };

// Show the model's output beside bicubic; an output the browser cannot display (TIFF) gets
// the Download link alone, never a comparison with something else. Resolves to a note for
// the status line ("" when the comparison is shown).
async function show(afterBlob, model, scale, asked) {
  clearResult();
  const format = asked || MEDIA_EXT[afterBlob.type] || "png"; // Automatic: what came back
  const a = URL.createObjectURL(afterBlob);
  state.urls = [a];
  const stem = state.file.name.replace(/\.[^.]*$/, "") || "image";
  const dl = $("download");
  dl.href = a;
  dl.download = `${stem}_x${scale}.${format}`;
  const size = `${(afterBlob.size / 1024).toFixed(0)} KB`;
  let shown = true;
  try { await loadImg($("img-after"), a); } catch (_) { shown = false; }
  if (shown) {
    setStatus("Preparing the bicubic comparison…");
    const before = await upscale(state.file, "bicubic", scale, asked ? "png" : "", null);
    const b = URL.createObjectURL(before.blob);
    state.urls.push(b);
    await loadImg($("img-before"), b);
    state.w = $("img-after").naturalWidth; state.h = $("img-after").naturalHeight;
  }
  $("result-title").textContent = shown ? "Before / after" : "Result";
  $("compare").hidden = !shown;
  $("zoom-box").hidden = !shown;
  $("tag-model").textContent = model;
  $("result-info").textContent = shown ? `Output ${state.w}×${state.h} pixels, ${size}.`
    : `Output ${format.toUpperCase()}, ${size}.`;
  $("result").hidden = false;
  if (shown) fit();
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
  if (shown) return "";
  const note = ` The browser cannot display ${format.toUpperCase()}, so there is no comparison: ` +
    "use Download";
  // Automatic gives TIFF only for a scientific TIFF, which no other format can hold
  return asked ? `${note} (choose PNG, JPEG or WebP to compare).` : `${note}.`;
}

// -- comparison viewer: both images share one transform, the after-layer is clipped ----------
function render() {
  const v = $("viewer");
  const t = `translate(${state.x}px, ${state.y}px) scale(${state.zoom})`;
  const rendering = state.zoom >= 1 ? "pixelated" : "auto"; // see pixels when magnified
  for (const id of ["img-before", "img-after"]) {
    $(id).style.transform = t;
    $(id).style.imageRendering = rendering;
  }
  const split = Number($("split").value) / 100;
  const px = v.clientWidth * split;
  $("layer-after").style.clipPath = `inset(0 0 0 ${px}px)`;
  $("divider").style.left = `${px - 1}px`;
  $("zoom-text").textContent = `${Math.round(state.zoom * 100)} %`;
}

function clampPan() {
  const v = $("viewer");
  const w = state.w * state.zoom, h = state.h * state.zoom;
  const cx = (v.clientWidth - w) / 2, cy = (v.clientHeight - h) / 2;
  state.x = w <= v.clientWidth ? cx : Math.min(0, Math.max(v.clientWidth - w, state.x));
  state.y = h <= v.clientHeight ? cy : Math.min(0, Math.max(v.clientHeight - h, state.y));
}

function zoomAt(factor, px, py) {
  const v = $("viewer");
  if (px === undefined) { px = v.clientWidth / 2; py = v.clientHeight / 2; }
  const z = Math.min(32, Math.max(0.05, state.zoom * factor));
  state.x = px - (px - state.x) * (z / state.zoom);
  state.y = py - (py - state.y) * (z / state.zoom);
  state.zoom = z;
  clampPan(); render();
}

function fit() {
  const v = $("viewer");
  if (!state.w) return;
  state.zoom = Math.min(v.clientWidth / state.w, v.clientHeight / state.h, 1);
  clampPan(); render();
}

function setupViewer() {
  const v = $("viewer");
  let drag = null;
  v.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX - state.x, y: e.clientY - state.y };
    v.setPointerCapture(e.pointerId); v.classList.add("dragging");
  });
  v.addEventListener("pointermove", (e) => {
    if (!drag) return;
    state.x = e.clientX - drag.x; state.y = e.clientY - drag.y;
    clampPan(); render();
  });
  const end = () => { drag = null; v.classList.remove("dragging"); };
  v.addEventListener("pointerup", end);
  v.addEventListener("pointercancel", end);
  v.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = v.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  v.addEventListener("keydown", (e) => {
    const step = 40;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[e.key]) {
      state.x += moves[e.key][0]; state.y += moves[e.key][1];
      clampPan(); render(); e.preventDefault();
    } else if (e.key === "+" || e.key === "=") { zoomAt(1.25); e.preventDefault(); }
    else if (e.key === "-") { zoomAt(0.8); e.preventDefault(); }
    else if (e.key === "0") { fit(); e.preventDefault(); }
  });
  $("split").addEventListener("input", render);
  $("zoom-in").addEventListener("click", () => zoomAt(1.25));
  $("zoom-out").addEventListener("click", () => zoomAt(0.8));
  $("zoom-fit").addEventListener("click", fit);
  $("zoom-1").addEventListener("click", () => zoomAt(1 / state.zoom));
  window.addEventListener("resize", () => { clampPan(); render(); });
}

function setupPicker() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => pick(e.target.files[0]));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); pick(e.dataTransfer.files[0]); });
  $("scale").addEventListener("change", fillModels);
  $("model").addEventListener("change", showNote);
  $("go").addEventListener("click", run);
}

setupPicker();
setupViewer();
loadModels().catch((e) => setStatus(`Cannot list models: ${e.message}`, true));
