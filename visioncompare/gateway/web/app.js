// The comparison page: plain JS over the gateway's JSON API (/v1/models, /v1/compare, /v1/compare/png).
"use strict";

const $ = (id) => document.getElementById(id);

/** Result panels and the prompt canvas show the image fitted into a BOX x BOX px square. */
const BOX = 400;
const PROMPT_TASKS = new Set(["TASK_PROMPTED_SEGMENTATION"]);
const LABEL_TASKS = new Set(["TASK_ZERO_SHOT_CLASSIFICATION", "TASK_SEMANTIC_SEGMENTATION",
  "TASK_OBJECT_DETECTION", "TASK_INSTANCE_SEGMENTATION"]);
/** google.rpc.Code names by number: errors show the name, never the number. */
const STATUS_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];
const TIMING_STAGES = [["queue_ms", "queue", "queue", "queue"], ["preprocess_ms", "preprocess", "pre-processing", "pre"],
  ["inference_ms", "inference", "inference", "inference"], ["postprocess_ms", "postprocess", "post-processing", "post"]];

const state = {
  models: [], samples: {},
  blob: null, image: null, imageToken: 0, sampleName: "", sampleClasses: null,
  points: [], boxes: [], promptOrder: [], cursor: null, boxCorner: null,
  task: "", labelsEdited: false, suggestion: null,
  request: null,            // what the shown result was asked with: task, options, blob, image, prompts
  result: null,             // the CompareResponse JSON
  resultFilename: "",       // what the gateway names it, for saving it
  views: [],                // one per result: decoded masks, label map, threshold
  classOrder: [], hiddenClasses: new Set(),
};

const taskTitle = (t) => t.replace(/^TASK_/, "").toLowerCase().replace(/_/g, " ");
const statusName = (code) => STATUS_NAMES[code] || "UNKNOWN";
const hue = (i) => (i * 137.508) % 360;
const colour = (h, a = 1) => `hsla(${h}, 80%, 50%, ${a})`;  // h: a hue in degrees
/** Masks without a class (prompted, automatic): blues and purples first, apart from the prompts' colours. */
const maskHue = (i) => (200 + i * 137.508) % 360;
const fmt = (x, d = 2) => Number(x || 0).toFixed(d);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("aria-") || k === "role" || k === "for") node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

// --- COCO compressed RLE (pycocotools' string format) ---------------------------------
function rleCounts(str) {
  const counts = [];
  let p = 0;
  while (p < str.length) {
    let x = 0, k = 0, more = 1, c = 0;
    while (more) {
      c = str.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

function decodeMask(rle) {  // -> Uint8Array, row-major h*w
  const h = rle.height, w = rle.width, out = new Uint8Array(h * w);
  const counts = rleCounts(atob(rle.counts));
  let idx = 0, value = 0;
  for (const n of counts) {
    if (value) for (let j = idx; j < idx + n; j++) out[(j % h) * w + Math.floor(j / h)] = 1;
    idx += n; value ^= 1;
  }
  return out;
}

/**
 * A mask cut to its bounding box, and a canvas of it in one colour (drawn scaled, with alpha).
 * `test(i)` says whether row-major pixel i is in the mask; only `region` (x0, y0, x1, y1, inclusive) is searched.
 */
function cropMask(test, w, h, rgb, region = { x0: 0, y0: 0, x1: w - 1, y1: h - 1 }) {
  let x0 = w, y0 = h, x1 = -1, y1 = -1, count = 0;
  const rx0 = Math.max(0, region.x0), ry0 = Math.max(0, region.y0);
  const rx1 = Math.min(w - 1, region.x1), ry1 = Math.min(h - 1, region.y1);
  for (let y = ry0; y <= ry1; y++) {
    for (let x = rx0; x <= rx1; x++) {
      if (!test(y * w + x)) continue;
      count++;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
  }
  if (!count) return { count: 0 };
  const cw = x1 - x0 + 1, ch = y1 - y0 + 1, data = new Uint8Array(cw * ch);
  const canvas = document.createElement("canvas");
  canvas.width = cw; canvas.height = ch;
  const ctx = canvas.getContext("2d"), pixels = ctx.createImageData(cw, ch);
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      if (!test((y + y0) * w + x + x0)) continue;
      const o = y * cw + x;
      data[o] = 1;
      pixels.data[4 * o] = rgb[0]; pixels.data[4 * o + 1] = rgb[1]; pixels.data[4 * o + 2] = rgb[2]; pixels.data[4 * o + 3] = 255;
    }
  }
  ctx.putImageData(pixels, 0, 0);
  return { count, x0, y0, cw, ch, data, canvas };
}

/** Each class of a label map (index k > 0) as a cropped mask: one pass for the boxes, then each box. */
function labelMapMasks(indices, w, h, classes) {
  const n = classes + 1, x0 = new Int32Array(n).fill(w), y0 = new Int32Array(n).fill(h);
  const x1 = new Int32Array(n).fill(-1), y1 = new Int32Array(n).fill(-1);
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i++) {
      const k = indices[i];
      if (!k || k >= n) continue;
      if (x < x0[k]) x0[k] = x; if (x > x1[k]) x1[k] = x; if (y < y0[k]) y0[k] = y; if (y > y1[k]) y1[k] = y;
    }
  }
  return (k, rgb) => (x1[k] < 0 ? { count: 0 }
    : cropMask((j) => indices[j] === k, w, h, rgb, { x0: x0[k], y0: y0[k], x1: x1[k], y1: y1[k] }));
}

function hslToRgb(h) {
  const f = (n) => { const k = (n + h / 30) % 12; return 255 * (0.5 - 0.4 * Math.max(-1, Math.min(k - 3, 9 - k, 1))); };
  return [f(0), f(8), f(4)];
}

// --- API -------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(body, fallback) {
    super(`${body.code || "UNKNOWN"}: ${body.message || fallback}`);
    this.violations = body.field_violations || [];
  }
}

/** The answer of a gateway call; an ApiError unless it is OK. */
async function call(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(body, response.statusText);
  }
  return response;
}

async function api(path, options) {
  return (await call(path, options)).json();
}

/** The name the gateway gives an answer to save it under (its content-disposition's filename). */
function filenameOf(response) {
  return /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "")?.[1] || "";
}

async function loadModels() {
  const body = await api("/v1/models");
  state.models = body.models || [];
  renderTaskChoices();
  renderCapabilities();
}

function servingModels() { return state.models.filter((m) => m.state === "MODEL_STATE_SERVING"); }
function capability(model, task) { return (model.capabilities?.tasks || []).find((t) => t.task === task); }
function taskServers(task) { return servingModels().filter((m) => capability(m, task)); }
const isOpen = (m, task) => capability(m, task)?.vocabulary === "VOCABULARY_OPEN";
const fixedLabels = (m, task) => {
  const t = capability(m, task);
  return t?.vocabulary === "VOCABULARY_FIXED" && t.label_names?.length ? t.label_names : null;
};
const accepts = (task, option) => taskServers(task).length > 0 &&
  taskServers(task).every((m) => (capability(m, task).accepted_options || []).includes(option));

function renderTaskChoices() {
  const select = $("task"), previous = select.value;
  const tasks = new Set();
  for (const m of servingModels()) for (const t of m.capabilities?.tasks || []) tasks.add(t.task);
  select.replaceChildren();
  for (const task of [...tasks].sort()) {
    const servers = taskServers(task).map((m) => m.model_name);
    select.add(new Option(`${taskTitle(task)} ${servers.length > 1 ? "(comparable)" : `(only ${servers[0]})`}`, task));
  }
  if (tasks.has(previous)) select.value = previous;
  else if (tasks.has("TASK_INSTANCE_SEGMENTATION")) select.value = "TASK_INSTANCE_SEGMENTATION";
  onTaskChange();
}

// --- labels: suggested where a vocabulary is known -------------------------------------
/** The labels to offer for a task, and where they come from; null when no vocabulary is known. */
function suggestLabels(task) {
  for (const m of taskServers(task)) {
    const names = fixedLabels(m, task);
    if (names) return { labels: names, source: `${m.model_name}'s fixed vocabulary`, fixed: true };
  }
  if (state.sampleClasses?.length) {
    return { labels: state.sampleClasses, source: `the classes in the sample ${state.sampleName}` };
  }
  for (const m of state.models) {
    for (const t of m.capabilities?.tasks || []) {
      const names = fixedLabels(m, t.task);
      if (names) return { labels: names, source: `${m.model_name}'s labels for ${taskTitle(t.task)}` };
    }
  }
  return null;
}

/** An open-vocabulary model serves the task and no fixed-vocabulary one gives the gateway labels to send. */
function labelsRequired(task) {
  const servers = taskServers(task);
  return servers.some((m) => isOpen(m, task)) && !servers.some((m) => fixedLabels(m, task));
}

function currentLabels() { return $("labels").value.split(",").map((s) => s.trim()).filter(Boolean); }

function updateLabels({ taskChanged = false } = {}) {
  const task = $("task").value;
  const suggestion = LABEL_TASKS.has(task) ? suggestLabels(task) : null;
  state.suggestion = suggestion;
  // A fixed-vocabulary model refuses other labels: its vocabulary replaces what was typed for another task.
  if (!state.labelsEdited || (taskChanged && suggestion?.fixed)) {
    $("labels").value = suggestion ? suggestion.labels.join(", ") : "";
    state.labelsEdited = false;
  }
  const required = labelsRequired(task);
  let text;
  if (state.labelsEdited) text = required ? "Required for this task." : "Your labels.";
  else if (suggestion) text = `Suggested: ${suggestion.source} (${suggestion.labels.length}). Edit freely.`;
  else text = required ? "Required: list the classes to look for, e.g. cat, dog." : "Optional.";
  $("labels-source").textContent = text;
  $("labels-reset").hidden = !(state.labelsEdited && suggestion);
}

function onTaskChange() {
  const task = $("task").value, changed = task !== state.task;
  state.task = task;
  const servers = taskServers(task).map((m) => m.model_name);
  $("task-help").textContent = servers.length ? `served by ${servers.join(", ")}` : "";
  const open = taskServers(task).some((m) => isOpen(m, task));
  $("labels-row").hidden = !(open && LABEL_TASKS.has(task));
  // With a fixed-vocabulary model beside the open ones, the labels may go to the open ones only.
  $("labels-scope").hidden = !taskServers(task).some((m) => capability(m, task)?.vocabulary === "VOCABULARY_FIXED");
  $("score-row").hidden = !accepts(task, "TASK_OPTION_SCORE_THRESHOLD");
  updateLabels({ taskChanged: changed });
  $("prompt-area").hidden = !PROMPT_TASKS.has(task);
  clearProblems();
  drawPromptCanvas();
}

// --- image choice ----------------------------------------------------------------------
async function setImage(blob, sample = "") {
  const token = ++state.imageToken;
  const image = await createImageBitmap(blob, { imageOrientation: "from-image" });
  if (token !== state.imageToken) return;  // a later choice won
  Object.assign(state, { blob, image, points: [], boxes: [], promptOrder: [], cursor: null, boxCorner: null, sampleName: sample });
  state.sampleClasses = sample ? state.samples[sample]?.classes || null : null;
  if (!sample) $("sample").value = "";
  updateLabels();
  clearProblems();
  promptsChanged();
  $("status").textContent = `image ${image.width}×${image.height}${sample ? ` (${sample})` : ""}`;
}

async function loadSamples() {
  const names = await api("/v1/samples");
  state.samples = await fetch("/static/samples.json").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  for (const name of names) $("sample").add(new Option(name, name));
  return names;
}

async function chooseSample(name) {
  const token = state.imageToken;
  const response = await fetch(`/samples/${encodeURIComponent(name)}`);
  const blob = await response.blob();
  if (token !== state.imageToken) return;  // an image was chosen meanwhile
  $("sample").value = name;
  await setImage(blob, name);
}

// --- prompts ---------------------------------------------------------------------------
function fit(width, height, box = BOX) {
  const scale = Math.min(box / width, box / height);
  return { scale, w: Math.max(1, Math.round(width * scale)), h: Math.max(1, Math.round(height * scale)) };
}

/** Sizes a canvas for w x h CSS px (sharp on high-DPI screens); the context draws in CSS px. */
function sizeCanvas(canvas, w, h, maxPixels = 16e6) {
  const dpr = Math.max(1, Math.min(window.devicePixelRatio || 1, Math.sqrt(maxPixels / (w * h))));
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(canvas.width / w, 0, 0, canvas.height / h, 0, 0);
  return ctx;
}

function imagePoint(canvas, event, image) {
  const r = canvas.getBoundingClientRect();
  const x = Math.min(Math.max((event.clientX - r.left) / r.width, 0), 1) * image.width;
  const y = Math.min(Math.max((event.clientY - r.top) / r.height, 0), 1) * image.height;
  return { x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10 };
}

const box = (a, b) => ({ x1: Math.min(a.x, b.x), y1: Math.min(a.y, b.y), x2: Math.max(a.x, b.x), y2: Math.max(a.y, b.y) });

/** Points (green +, red −) and boxes (yellow) at `scale` CSS px per image px. */
function drawPrompts(ctx, prompts, scale, preview = null) {
  ctx.save();
  ctx.setLineDash([]);
  for (const b of [...prompts.boxes, ...(preview ? [preview] : [])]) {
    const rect = [b.x1 * scale, b.y1 * scale, (b.x2 - b.x1) * scale, (b.y2 - b.y1) * scale];
    ctx.lineWidth = 4; ctx.strokeStyle = "#000a"; ctx.strokeRect(...rect);
    ctx.lineWidth = 2; ctx.strokeStyle = "#f5b400"; ctx.strokeRect(...rect);
  }
  for (const p of prompts.points) {
    const x = p.x * scale, y = p.y * scale;
    ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI);
    ctx.fillStyle = p.positive ? "#17a643" : "#e0362c"; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x - 3.5, y); ctx.lineTo(x + 3.5, y);
    if (p.positive) { ctx.moveTo(x, y - 3.5); ctx.lineTo(x, y + 3.5); }
    ctx.stroke();
  }
  ctx.restore();
}

const promptWords = (prompts) => {
  const pos = prompts.points.filter((p) => p.positive).length, neg = prompts.points.length - pos;
  const parts = [];
  if (pos) parts.push(`${pos} positive point${pos > 1 ? "s" : ""}`);
  if (neg) parts.push(`${neg} negative point${neg > 1 ? "s" : ""}`);
  if (prompts.boxes.length) parts.push(`${prompts.boxes.length} box${prompts.boxes.length > 1 ? "es" : ""}`);
  return parts.join(", ") || "no prompts";
};

function drawPromptCanvas(preview) {
  const canvas = $("prompt-canvas");
  if (!state.image || $("prompt-area").hidden) return;
  const { scale, w, h } = fit(state.image.width, state.image.height);
  const ctx = sizeCanvas(canvas, w, h);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(state.image, 0, 0, w, h);
  drawPrompts(ctx, state, scale, preview);
  if (state.cursor && document.activeElement === canvas) {  // the keyboard's cross
    const x = state.cursor.x * scale, y = state.cursor.y * scale;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 3;
    ctx.beginPath(); ctx.moveTo(x - 10, y); ctx.lineTo(x + 10, y); ctx.moveTo(x, y - 10); ctx.lineTo(x, y + 10); ctx.stroke();
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1; ctx.stroke();
    if (state.boxCorner) {
      const c = state.boxCorner;
      ctx.setLineDash([4, 3]); ctx.strokeStyle = "#f5b400";
      ctx.strokeRect(c.x * scale, c.y * scale, x - c.x * scale, y - c.y * scale);
      ctx.setLineDash([]);
    }
  }
  canvas.dataset.scale = String(scale);
}

/** After the prompts changed: the canvas, the summary and the list of prompts. */
function promptsChanged() {
  drawPromptCanvas();
  $("prompt-summary").textContent = `${state.points.length} point(s), ${state.boxes.length} box(es)`;
  renderPromptList();
}

function renderPromptList() {
  const list = $("prompt-list");
  list.replaceChildren();
  const items = [
    ...state.points.map((p, i) => [`${p.positive ? "positive" : "negative"} point (${Math.round(p.x)}, ${Math.round(p.y)})`,
      () => state.points.splice(i, 1)]),
    ...state.boxes.map((b, i) => [`box (${Math.round(b.x1)}, ${Math.round(b.y1)})–(${Math.round(b.x2)}, ${Math.round(b.y2)})`,
      () => state.boxes.splice(i, 1)]),
  ];
  for (const [text, remove] of items) {
    const button = el("button", { type: "button", className: "link", textContent: "×", "aria-label": `remove ${text}` });
    button.addEventListener("click", () => { remove(); promptsChanged(); $("prompt-canvas").focus(); });
    list.append(el("li", {}, text, button));
  }
}

function undoPrompt() {
  const last = state.promptOrder.pop();
  if (last === "box" && state.boxes.length) state.boxes.pop();
  else if (state.points.length) state.points.pop();
  else state.boxes.pop();
  promptsChanged();
}

function addPrompt(kind, value) {
  (kind === "box" ? state.boxes : state.points).push(value);
  state.promptOrder.push(kind);
  clearProblems();
}

function setupPrompts() {
  const canvas = $("prompt-canvas");
  let drag = null;
  canvas.addEventListener("mousedown", (e) => {
    if (!state.image) return;
    drag = { at: imagePoint(canvas, e, state.image), x: e.clientX, y: e.clientY };
  });
  canvas.addEventListener("mousemove", (e) => {
    if (drag) drawPromptCanvas(box(drag.at, imagePoint(canvas, e, state.image)));
  });
  window.addEventListener("mouseup", (e) => {
    if (!drag) return;
    const start = drag, p = imagePoint(canvas, e, state.image);
    drag = null;
    if (Math.hypot(e.clientX - start.x, e.clientY - start.y) > 6) {
      const b = box(start.at, p);
      if (b.x2 > b.x1 && b.y2 > b.y1) addPrompt("box", b);
    } else if (e.target === canvas) {
      addPrompt("point", { x: p.x, y: p.y, positive: !e.shiftKey });
    }
    promptsChanged();
  });
  canvas.addEventListener("keydown", (e) => {
    if (!state.image) return;
    const { width: W, height: H } = state.image;
    const c = (state.cursor ??= { x: Math.round(W / 2), y: Math.round(H / 2) });
    const step = Math.max(1, Math.round((e.shiftKey ? 0.1 : 0.02) * Math.max(W, H)));
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key === "ArrowLeft") c.x = Math.max(0, c.x - step);
    else if (key === "ArrowRight") c.x = Math.min(W, c.x + step);
    else if (key === "ArrowUp") c.y = Math.max(0, c.y - step);
    else if (key === "ArrowDown") c.y = Math.min(H, c.y + step);
    else if (key === "Enter" || key === " ") addPrompt("point", { x: c.x, y: c.y, positive: !e.shiftKey });
    else if (key === "n") addPrompt("point", { x: c.x, y: c.y, positive: false });
    else if (key === "b") {
      if (!state.boxCorner) state.boxCorner = { ...c };
      else {
        const b = box(state.boxCorner, c);
        state.boxCorner = null;
        if (b.x2 > b.x1 && b.y2 > b.y1) addPrompt("box", b);
      }
    } else if (key === "Backspace" || key === "Delete") undoPrompt();
    else if (key === "Escape") state.boxCorner = null;
    else return;
    e.preventDefault();
    promptsChanged();
  });
  canvas.addEventListener("focus", () => drawPromptCanvas());
  canvas.addEventListener("blur", () => drawPromptCanvas());
  $("undo-prompt").addEventListener("click", undoPrompt);
  $("clear-prompts").addEventListener("click", () => {
    state.points = []; state.boxes = []; state.promptOrder = []; state.boxCorner = null; promptsChanged();
  });
}

// --- required inputs, checked before sending --------------------------------------------
/** What is missing or wrong, as [control id, message]; empty when the request can go. */
function checkInputs() {
  const problems = [], task = $("task").value;
  if (!state.blob) problems.push(["file", "Choose an image: drop one, pick a file, or pick a sample."]);
  if (!task) problems.push(["task", "No task to run: no model serves yet (see the table below)."]);
  if (task && !$("labels-row").hidden) {
    const labels = currentLabels(), seen = new Set();
    const repeated = labels.filter((l) => (seen.has(l) ? true : (seen.add(l), false)));
    if (!labels.length && labelsRequired(task)) {
      problems.push(["labels", `${taskTitle(task)[0].toUpperCase()}${taskTitle(task).slice(1)} needs labels: ` +
        "list the classes to look for, comma-separated (e.g. cat, dog)."]);
    }
    if (repeated.length) problems.push(["labels", `Labels repeat ${[...new Set(repeated)].join(", ")}: give each once.`]);
  }
  if (PROMPT_TASKS.has(task)) {
    if (!state.points.length && !state.boxes.length) {
      problems.push(["prompt-canvas", "Prompted segmentation needs a prompt: click the image for a point, or drag a box."]);
    } else if (!state.boxes.length && !state.points.some((p) => p.positive)) {
      problems.push(["prompt-canvas", "Add a positive point or a box: negative points alone select nothing."]);
    }
  }
  const score = $("score-threshold").value;
  if (!$("score-row").hidden && score !== "" && !(Number(score) >= 0 && Number(score) <= 1)) {
    problems.push(["score-threshold", "The minimum score must lie between 0 and 1 (or be empty)."]);
  }
  return problems;
}

function clearProblems() {
  $("form-errors").replaceChildren();
  for (const node of document.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function showProblems(problems) {
  clearProblems();
  if (!problems.length) return;
  const list = el("ul");
  for (const [id, text] of problems) {
    $(id)?.setAttribute("aria-invalid", "true");
    list.append(el("li", { textContent: text }));
  }
  $("form-errors").append(el("strong", { textContent: "Not sent:" }), list);
  $(problems[0][0])?.focus();
}

// --- compare ---------------------------------------------------------------------------
/** Whether the labels go to the open-vocabulary models only (CompareRequest.open_vocabulary_labels). */
const labelsForOpenOnly = () => !$("labels-scope").hidden && $("labels-scope-open").checked;

function buildRequest() {
  const task = $("task").value, options = {};
  let openLabels = [];
  if (!$("labels-row").hidden && currentLabels().length) {
    if (labelsForOpenOnly()) openLabels = currentLabels();
    else options.labels = currentLabels();
  }
  if (!$("score-row").hidden && $("score-threshold").value !== "") options.score_threshold = Number($("score-threshold").value);
  const prompts = { points: state.points.map((p) => ({ ...p })), boxes: state.boxes.map((b) => ({ ...b })) };
  if (PROMPT_TASKS.has(task)) options.prompts = { ...prompts, multimask_output: false };
  return { task, options, openLabels, blob: state.blob, image: state.image, prompts: PROMPT_TASKS.has(task) ? prompts : null };
}

function formOf(request) {
  const form = new FormData();
  form.append("image", request.blob, "image");
  form.append("task", request.task);
  form.append("options", JSON.stringify(request.options));
  if (request.openLabels.length) form.append("open_vocabulary_labels", JSON.stringify(request.openLabels));
  return form;
}

async function runCompare() {
  const problems = checkInputs();
  showProblems(problems);
  if (problems.length) {
    $("status").textContent = "not sent: see above";
    return;
  }
  const request = buildRequest();
  $("run").disabled = true;
  $("status").textContent = "running…";
  try {
    const response = await call("/v1/compare", { method: "POST", body: formOf(request) });
    const result = await response.json();
    Object.assign(state, { request, result, resultFilename: filenameOf(response) });
    const ok = result.results.filter((r) => !r.status?.code).length;
    $("status").textContent = `done: ${result.results.length} model(s), ${ok} OK`;
    buildViews();
    renderResults();
  } catch (err) {
    $("status").textContent = `error: ${err.message}`;
    if (err.violations?.length) {
      showProblems(err.violations.map((v) => [fieldControl(v.field), `${v.field}: ${v.description}`]));
      $("run").focus();
    }
  } finally {
    $("run").disabled = false;
  }
}

const fieldControl = (field) => (field.startsWith("options.labels") ? "labels"
  : field.startsWith("options.prompts") ? "prompt-canvas" : field.startsWith("image") ? "file" : "run");

// --- results: one view per model -------------------------------------------------------
function outputOf(result) { return result.detect || result.segment || result.classify || null; }

function buildViews() {
  const { result, request } = state;
  // Colours follow the vocabulary's order (the same class keeps its colour across tasks); the toggles list
  // the classes some model found, in that order.
  const vocabulary = [];
  const found = new Set();
  for (const r of result.results) {
    const out = outputOf(r);
    for (const inst of out?.instances || []) if (inst.label?.name) found.add(inst.label.name);
    for (const name of (out?.label_map?.class_names || []).slice(1)) found.add(name);
  }
  for (const name of [...(request.options.labels || []), ...request.openLabels, ...(result.labels_used || []), ...found]) {
    if (name && !vocabulary.includes(name)) vocabulary.push(name);
  }
  const classHue = (name) => hue(vocabulary.indexOf(name));
  state.classOrder = vocabulary.filter((name) => found.has(name)).map((name) => ({ name, hue: classHue(name) }));
  state.hiddenClasses = new Set([...state.hiddenClasses].filter((c) => found.has(c)));
  const w = request.image.width, h = request.image.height;
  const previous = Object.fromEntries(state.views.map((v) => [v.name, v.threshold]));
  state.views = result.results.map((r) => {
    const output = outputOf(r);
    const view = { name: r.model_name, result: r, output, ok: !r.status?.code && !!output, instances: [], labelMap: null,
      threshold: previous[r.model_name] ?? Number($("threshold-all").value) };
    (output?.instances || []).forEach((inst, i) => {
      const name = inst.label?.name || "";
      const tone = name ? classHue(name) : maskHue(i), rgb = hslToRgb(tone);
      let mask = null;
      if (inst.mask?.rle && inst.mask.rle.width === w && inst.mask.rle.height === h) {
        const full = decodeMask(inst.mask.rle), b = inst.mask.bbox;
        const region = b
          ? { x0: Math.floor(b.x1 || 0), y0: Math.floor(b.y1 || 0), x1: Math.ceil(b.x2 || 0), y1: Math.ceil(b.y2 || 0) }
          : undefined;
        mask = cropMask((j) => full[j], w, h, rgb, region);
        if (region && mask.count < Number(inst.mask.area_pixels || 0)) mask = cropMask((j) => full[j], w, h, rgb);  // a loose bbox
      }
      view.instances.push({ inst, index: i, name, hue: tone, score: inst.score || 0, mask });
    });
    const lm = output?.label_map;
    if (lm && lm.width === w && lm.height === h) {
      const text = atob(lm.class_indices_u16le || ""), n = w * h, indices = new Uint16Array(n);
      for (let i = 0; i < n && 2 * i + 1 < text.length; i++) indices[i] = text.charCodeAt(2 * i) | (text.charCodeAt(2 * i + 1) << 8);
      const names = lm.class_names || [], maskOf = labelMapMasks(indices, w, h, names.length - 1);
      const classes = names.slice(1).map((name, k) => {
        const mask = maskOf(k + 1, hslToRgb(classHue(name)));
        return { name, hue: classHue(name), count: mask.count, mask };
      });
      view.labelMap = { indices, classes, total: n, background: n - classes.reduce((s, c) => s + c.count, 0) };
    }
    return view;
  });
  const present = new Set(state.views.flatMap((v) => [...v.instances.map((x) => x.name),
    ...(v.labelMap?.classes || []).filter((c) => c.count).map((c) => c.name)]));
  state.classOrder = state.classOrder.filter((c) => present.has(c.name));  // no toggle for a class nothing found
}

/** How label maps are drawn: the fill's (or the outlines') opacity, and whether as outlines only. */
function labelMapStyle() {
  return { opacity: Number($("labelmap-opacity").value), outline: $("labelmap-outline").checked };
}

/**
 * A class mask's outline: its pixels with a 4-neighbour inside the image that is not in the class,
 * in the mask's colour, on a canvas of the mask's crop (made once, kept on the mask).
 */
function outlineOf(mask, w, h) {
  if (mask.outline) return mask.outline;
  const { x0, y0, cw, ch, data } = mask;
  const inside = (x, y) => x >= 0 && y >= 0 && x < cw && y < ch && data[y * cw + x];
  const source = mask.canvas.getContext("2d").getImageData(0, 0, cw, ch);
  const canvas = document.createElement("canvas");
  canvas.width = cw; canvas.height = ch;
  const ctx = canvas.getContext("2d"), pixels = ctx.createImageData(cw, ch);
  for (let y = 0; y < ch; y++) {
    for (let x = 0; x < cw; x++) {
      if (!data[y * cw + x]) continue;
      const edge = [[x - 1, y], [x + 1, y], [x, y - 1], [x, y + 1]].some(([nx, ny]) => {
        const ix = nx + x0, iy = ny + y0;
        return ix >= 0 && iy >= 0 && ix < w && iy < h && !inside(nx, ny);
      });
      if (!edge) continue;
      const o = 4 * (y * cw + x);
      for (let k = 0; k < 4; k++) pixels.data[o + k] = source.data[o + k];
    }
  }
  ctx.putImageData(pixels, 0, 0);
  mask.outline = { x0, y0, cw, ch, canvas };
  return mask.outline;
}

const classShown = (name) => !name || !state.hiddenClasses.has(name);
function visibleInstances(view) {
  return view.instances.filter((x) => x.score >= view.threshold && classShown(x.name));
}

function matchedIndices() {  // model name -> Set of instance indices that some pair matched
  const matched = {};
  for (const pair of state.result.agreements || []) {
    for (const m of pair.instances?.matches || []) {
      (matched[pair.model_a] ??= new Set()).add(m.index_a || 0);
      (matched[pair.model_b] ??= new Set()).add(m.index_b || 0);
    }
  }
  return matched;
}

/** Draws one model's view at `scale` CSS px per image px: masks, label map, boxes, labels, keypoints, prompts. */
function paint(canvas, view, scale) {
  const image = state.request.image;
  const w = Math.max(1, Math.round(image.width * scale)), h = Math.max(1, Math.round(image.height * scale));
  const ctx = sizeCanvas(canvas, w, h);
  ctx.imageSmoothingEnabled = scale < 1;
  if (!view.ok) ctx.filter = "grayscale(1) brightness(0.8)";
  ctx.drawImage(image, 0, 0, w, h);
  ctx.filter = "none";
  ctx.imageSmoothingEnabled = false;  // masks: image pixels stay pixels
  const draw = (m, alpha) => {
    ctx.globalAlpha = alpha;
    ctx.drawImage(m.canvas, m.x0 * scale, m.y0 * scale, m.cw * scale, m.ch * scale);
  };
  const { opacity, outline } = labelMapStyle();
  for (const c of view.labelMap?.classes || []) {
    if (c.count && classShown(c.name)) draw(outline ? outlineOf(c.mask, image.width, image.height) : c.mask, opacity);
  }
  const highlight = $("highlight-unmatched").checked && (state.result.agreements || []).length > 0;
  const matched = highlight ? matchedIndices()[view.name] || new Set() : null;
  const shown = visibleInstances(view);
  for (const x of shown) if (x.mask?.count) draw(x.mask, matched?.has(x.index) ? 0.15 : 0.45);
  ctx.globalAlpha = 1;
  ctx.imageSmoothingEnabled = true;
  ctx.font = "12px system-ui, sans-serif";
  const tags = [];
  for (const x of shown) {
    const b = x.inst.box || {}, x1 = (b.x1 || 0) * scale, y1 = (b.y1 || 0) * scale;
    const unmatched = matched && !matched.has(x.index);
    ctx.setLineDash(unmatched ? [8, 4] : []);
    ctx.lineWidth = unmatched ? 3 : 2;
    ctx.strokeStyle = colour(x.hue, matched && !unmatched ? 0.4 : 1);
    ctx.strokeRect(x1, y1, ((b.x2 || 0) - (b.x1 || 0)) * scale, ((b.y2 || 0) - (b.y1 || 0)) * scale);
    for (const k of x.inst.keypoints || []) {
      ctx.beginPath(); ctx.arc((k.x || 0) * scale, (k.y || 0) * scale, 3.5, 0, 2 * Math.PI);
      ctx.fillStyle = colour(x.hue); ctx.fill(); ctx.lineWidth = 1; ctx.strokeStyle = "#000"; ctx.stroke();
    }
    tags.push([x, x1, y1]);
  }
  ctx.setLineDash([]);
  const taken = [];
  for (const [x, x1, y1] of tags) {  // labels last, on top, kept inside the panel and apart
    const text = `${x.name || "mask"} ${fmt(x.score)}`, tw = ctx.measureText(text).width + 14, th = 16;
    let left = Math.min(Math.max(x1, 0), Math.max(w - tw, 0)), top = y1 - th;
    if (top < 0) top = Math.min(y1, h - th);
    while (taken.some((t) => left < t[0] + t[2] && t[0] < left + tw && top < t[1] + th && t[1] < top + th) && top + th < h) top += th;
    taken.push([left, top, tw]);
    ctx.fillStyle = "#111d"; ctx.fillRect(left, top, tw, th);
    ctx.fillStyle = colour(x.hue); ctx.fillRect(left + 3, top + 4, 8, 8);
    ctx.fillStyle = "#fff"; ctx.fillText(text, left + 13, top + 12);
  }
  if (state.request.prompts) drawPrompts(ctx, state.request.prompts, scale);
  canvas.dataset.scale = String(scale);
  canvas.dataset.shown = String(shown.length);
  return { w, h };
}

function timingOf(view) {
  const t = view.output?.info?.timing || {};
  const stages = TIMING_STAGES.map(([key, cls, words, short]) => ({ cls, words, short, ms: Number(t[key] || 0) }));
  const total = view.result.latency_ms || 0;
  stages.push({ cls: "other", words: "transport and gateway", short: "transport",
    ms: Math.max(0, total - stages.reduce((s, x) => s + x.ms, 0)) });
  return { stages, total };
}

function timingBar(view, maxLatency) {
  const { stages, total } = timingOf(view);
  const words = stages.map((s) => `${s.words} ${fmt(s.ms, 1)} ms`).join(", ");
  const bar = el("div", { className: "timing", role: "img", "aria-label": `${view.name} took ${fmt(total, 1)} ms: ${words}` });
  bar.style.width = `${Math.max(2, (100 * total) / (maxLatency || 1))}%`;
  for (const s of stages) {
    const seg = el("span", { className: `seg ${s.cls}`, title: `${s.words}: ${fmt(s.ms, 1)} ms`, dataset: { ms: String(s.ms) } });
    seg.style.width = `${total > 0 ? (100 * s.ms) / total : 0}%`;
    bar.append(seg);
  }
  const text = el("div", { className: "timing-text", "aria-hidden": "true",
    textContent: `${fmt(total, 0)} ms: ` + stages.filter((s) => s.ms >= 0.05).map((s) => `${s.short} ${fmt(s.ms, 1)}`).join(" · ") });
  return [bar, text];
}

function renderResults() {
  const panels = $("panels");
  panels.replaceChildren();
  $("results-empty").hidden = true;
  $("result-tools").hidden = false;
  const maxLatency = Math.max(...state.views.map((v) => v.result.latency_ms || 0), 1);
  const anyScores = state.views.some((v) => v.instances.length);
  $("threshold-tool").hidden = !anyScores;
  $("labelmap-tool").hidden = !state.views.some((v) => v.labelMap);
  for (const view of state.views) {
    const r = view.result, output = view.output;
    const panel = el("article", { className: `panel${view.ok ? "" : " error"}`, dataset: { model: view.name },
      "aria-label": `${view.name} result` });
    const status = view.ok ? "OK" : statusName(r.status?.code ?? 2);
    const meta = `${Math.round(r.latency_ms || 0)} ms · ${status}` + (output?.info?.weights ? ` · weights ${output.info.weights}` : "");
    panel.append(el("h3", { textContent: view.name }), el("div", { className: "meta", textContent: meta, title: meta }));
    // The picture first, at the same height in every panel; what differs in length goes below it.
    const canvas = el("canvas");
    const open = el("button", { type: "button", className: "view", "aria-label": `Open ${view.name}'s result at full resolution` }, canvas);
    open.addEventListener("click", () => openViewer(view, open));
    canvas.addEventListener("mousemove", (e) => hover(e, canvas, view));
    canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    panel.append(open, ...timingBar(view, maxLatency));
    view.canvas = canvas;
    if (output?.info?.warnings?.length) {
      panel.append(el("div", { className: "meta warn", textContent: `⚠ ${output.info.warnings.join("; ")}` }));
    }
    if (!view.ok) {
      panel.append(el("p", { className: "error-text", textContent: `${status}: ${r.status?.message || "no output"}` }));
      const violations = (r.status?.details || []).flatMap((d) => d.field_violations || [])
        .filter((v) => v.description !== r.status?.message);
      if (violations.length) {
        const items = violations.map((v) => el("li", { textContent: `${v.field}: ${v.description}` }));
        panel.append(el("ul", { className: "violations" }, ...items));
      }
    }
    if (view.instances.length) {
      const input = el("input", { type: "range", min: "0", max: "1", step: "0.01", value: String(view.threshold),
        className: "threshold", "aria-label": `Minimum score shown for ${view.name}` });
      const out = el("output", { textContent: fmt(view.threshold) });
      input.addEventListener("input", () => { view.threshold = Number(input.value); repaint(); });
      view.thresholdInput = input; view.thresholdOutput = out;
      view.shownText = el("span", { className: "shown" });
      panel.append(el("div", { className: "panel-threshold" }, el("span", { textContent: "Min score", "aria-hidden": "true" }), input, out),
        view.shownText);
    }
    if (state.request.prompts) {
      panel.append(el("p", { className: "prompt-note", textContent: `Prompts drawn: ${promptWords(state.request.prompts)}` }));
    }
    if (view.labelMap) {
      view.legend = el("ul", { className: "legend", "aria-label": `${view.name} label map legend` });
      panel.append(view.legend);
    }
    if (output?.scores) {
      const list = el("ul", { className: "scores", "aria-label": `${view.name} class scores` });
      for (const s of output.scores) {
        const bar = el("span", { className: "bar" });
        bar.style.width = `${Math.round(100 * (s.label.score || 0))}px`;
        list.append(el("li", {}, bar, `${s.label.name} ${(100 * (s.label.score || 0)).toFixed(1)}% (sim ${fmt(s.similarity, 3)})`));
      }
      panel.append(list);
    }
    panels.append(panel);
  }
  renderClassToggles();
  repaint();
  renderAgreement();
}

/** Redraws every panel for the current thresholds and classes (no DOM rebuilt: focus stays put). */
function repaint() {
  if (!state.request) return;
  const { scale } = fit(state.request.image.width, state.request.image.height);
  for (const view of state.views) {
    paint(view.canvas, view, scale);
    if (view.thresholdInput) {
      view.thresholdInput.value = String(view.threshold);
      view.thresholdOutput.textContent = fmt(view.threshold);
      view.shownText.textContent = `${visibleInstances(view).length} of ${view.instances.length} instances shown`;
    }
    if (view.legend) renderLegend(view);
  }
  renderStaleNote();
}

function renderLegend(view) {
  const lm = view.labelMap;
  view.legend.replaceChildren();
  const row = (name, colourCss, count, off) => {
    const swatch = el("span", { className: "swatch", "aria-hidden": "true" });
    swatch.style.background = colourCss;
    const share = `${((100 * count) / lm.total).toFixed(1)}%`;
    return el("li", { className: off ? "off" : "", dataset: { class: name, share } }, swatch,
      el("span", { className: "name", textContent: name + (off ? " (hidden)" : "") }),
      el("span", { className: "share", textContent: share }));
  };
  for (const c of lm.classes) view.legend.append(row(c.name, colour(c.hue), c.count, !classShown(c.name)));
  view.legend.append(row("background", "transparent", lm.background, false));
}

function renderClassToggles() {
  const list = $("class-list");
  list.replaceChildren();
  $("class-toggles").hidden = !state.classOrder.length;
  for (const { name, hue: tone } of state.classOrder) {
    const box = el("input", { type: "checkbox", checked: !state.hiddenClasses.has(name), dataset: { class: name } });
    box.addEventListener("change", () => {
      if (box.checked) state.hiddenClasses.delete(name); else state.hiddenClasses.add(name);
      repaint();
    });
    const swatch = el("span", { className: "swatch", "aria-hidden": "true" });
    swatch.style.background = colour(tone);
    list.append(el("label", {}, box, swatch, name));
  }
}

function hover(event, canvas, view) {
  const image = state.request.image, p = imagePoint(canvas, event, image);
  const x = Math.min(Math.floor(p.x), image.width - 1), y = Math.min(Math.floor(p.y), image.height - 1);
  let text = "";
  const shown = visibleInstances(view);
  for (let i = shown.length - 1; i >= 0 && !text; i--) {
    const s = shown[i], m = s.mask, b = s.inst.box || {};
    const hit = m?.count ? (x >= m.x0 && y >= m.y0 && x < m.x0 + m.cw && y < m.y0 + m.ch && m.data[(y - m.y0) * m.cw + x - m.x0])
      : x >= (b.x1 || 0) && x <= (b.x2 || 0) && y >= (b.y1 || 0) && y <= (b.y2 || 0);
    if (hit) text = `${s.name || "mask"}: ${fmt(s.score, 3)}`;
  }
  if (!text && view.labelMap) {
    const k = view.labelMap.indices[y * image.width + x];
    if (k && classShown(view.labelMap.classes[k - 1]?.name)) text = view.labelMap.classes[k - 1].name;
  }
  const tip = $("tooltip");
  if (!text) { tip.hidden = true; return; }
  tip.textContent = text;
  tip.style.left = `${event.clientX + 12}px`; tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

// --- full-resolution view ----------------------------------------------------------------
function openViewer(view, opener) {
  const image = state.request.image, dialog = $("viewer"), canvas = $("viewer-canvas");
  const room = Math.min((window.innerWidth * 0.96 - 40) / image.width, (window.innerHeight * 0.94 - 130) / image.height);
  const scale = room > 1 ? Math.min(room, 8) : 1;  // never below the image's own pixels; small images enlarged
  paint(canvas, view, scale);
  canvas.onmousemove = (e) => hover(e, canvas, view);
  canvas.onmouseleave = () => { $("tooltip").hidden = true; };
  $("viewer-title").textContent = `${view.name}: full resolution`;
  $("viewer-note").textContent = `${image.width}×${image.height} px, ` +
    (scale === 1 ? "1 image pixel per screen pixel (scroll to pan)" : `enlarged ${scale.toFixed(1)}×`);
  dialog.dataset.model = view.name;
  dialog.onclose = () => opener.focus();
  dialog.showModal();
}

// --- agreement -----------------------------------------------------------------------------
function sentThreshold() { return state.request?.options.score_threshold; }

const iouKind = (a) => (a.iou_kind === "IOU_KIND_MASK" ? "mask" : "box");
const percent = (x) => `${(100 * (x || 0)).toFixed(1)}%`;

/** Per kind of output: the agreement table's caption, its columns and a pair's cells. */
const AGREEMENT_TABLES = {
  instances: (pairs, sent) => {
    const a = pairs.find((p) => p.instances).instances;
    const where = sent === undefined ? "each model's default score threshold (none sent)" : `score ≥ ${fmt(sent)} (sent with the request)`;
    return {
      text: `Computed by the gateway on every instance the models returned, at ${where}; a match needs ` +
        `${iouKind(a)} IoU ≥ ${fmt(a.iou_threshold)}. The score sliders above filter only what the panels show.`,
      headers: ["Models", "Matched", "Mean IoU", "Label agreement", "Only in A", "Only in B"],
      cells: (pair) => [`${pair.model_a} vs ${pair.model_b} (${iouKind(pair.instances)} IoU ≥ ${fmt(pair.instances.iou_threshold)})`,
        (pair.instances.matches || []).length, fmt(pair.instances.mean_iou, 3),
        `${Math.round(100 * (pair.instances.label_agreement_rate || 0))}%`,
        pair.instances.only_a_count || 0, pair.instances.only_b_count || 0],
    };
  },
  label_map: () => ({
    text: "Computed by the gateway pixel by pixel on the label maps the models returned: pixel agreement counts " +
      "every pixel (background included); IoU is per class, over the classes either model found, and their mean. " +
      "The class toggles, opacity and outlines above change only what the panels show.",
    headers: ["Models", "Pixel agreement", "Mean IoU", "IoU per class"],
    cells: (pair) => {
      const m = pair.label_map, classes = m.classes || [];
      return [`${pair.model_a} vs ${pair.model_b}`, percent(m.pixel_agreement),
        `${fmt(m.mean_iou, 3)} over ${classes.length} class${classes.length === 1 ? "" : "es"}`,
        classes.map((c) => `${c.name} ${fmt(c.iou)}`).join(" · ") || "no class found"];
    },
  }),
  classification: () => ({
    text: "Computed by the gateway on each model's class scores: whether the top labels agree, how far the top-k " +
      "labels overlap, and the rank correlation (Spearman) of the scores of the labels both returned.",
    headers: ["Models", "Top-1", "Top-k overlap", "Rank correlation"],
    cells: (pair) => {
      const c = pair.classification, shared = c.shared_labels || 0;
      return [`${pair.model_a} vs ${pair.model_b}`, c.top1_agree ? "agrees" : "differs",
        `top-${c.k || 0}: ${fmt(c.topk_overlap)}`,
        c.rank_correlation === undefined ? `– (${shared} shared label${shared === 1 ? "" : "s"})`
          : `${fmt(c.rank_correlation)} over ${shared} shared labels`];
    },
  }),
};

function renderAgreement() {
  const root = $("agreement");
  root.replaceChildren();
  const pairs = state.result.agreements || [];
  if (state.result.labels_used?.length) {
    const used = state.result.labels_used;
    root.append(el("p", { className: "help", textContent: `Labels the gateway sent to open-vocabulary models: ${used.length} ` +
      `(${used.slice(0, 10).join(", ")}${used.length > 10 ? "…" : ""})` }));
  }
  if (!pairs.length) {
    root.append(el("p", { className: "help", textContent: "No agreement figures: fewer than two models returned results." }));
    return;
  }
  const table = el("table", { id: "agreement-table" });
  const kind = pairs[0].label_map ? "label_map" : pairs[0].classification ? "classification" : "instances";
  const caption = el("caption", { id: "agreement-caption" });
  const sent = sentThreshold();
  caption.dataset.scoreThreshold = sent === undefined ? "" : String(sent);
  const { text, headers, cells } = AGREEMENT_TABLES[kind](pairs, sent);
  caption.textContent = text;
  table.append(caption);
  const head = table.createTHead().insertRow();
  for (const h of headers) head.append(el("th", { scope: "col", textContent: h }));
  const body = table.createTBody();
  for (const pair of pairs) {
    const row = body.insertRow();
    row.dataset.pair = `${pair.model_a} vs ${pair.model_b}`;
    for (const c of cells(pair)) row.insertCell().textContent = String(c);
  }
  root.append(table, el("div", { id: "stale-note" }));
  renderStaleNote();
}

/** When the panels filter above the score the gateway computed agreement at: say so, offer to recompute. */
function renderStaleNote() {
  const note = $("stale-note");
  if (!note || !state.result) return;
  note.replaceChildren();
  note.className = "";
  const withScores = state.views.filter((v) => v.instances.length);
  if (!withScores.length) return;
  const shown = Math.min(...withScores.map((v) => v.threshold));
  const sent = sentThreshold() ?? 0;
  if (shown <= sent) return;
  note.className = "stale";
  note.append(`The panels show scores ≥ ${fmt(shown)}; the figures above count every instance returned. `);
  if (accepts(state.request.task, "TASK_OPTION_SCORE_THRESHOLD")) {
    const again = el("button", { type: "button", className: "secondary", id: "recompute", textContent: `Recompute at ≥ ${fmt(shown)}` });
    again.addEventListener("click", () => {
      $("task").value = state.request.task;
      $("score-threshold").value = fmt(shown);
      runCompare();
    });
    note.append(again);
  }
}

// --- downloads --------------------------------------------------------------------------
function download(blob, name) {
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 30000);
}

async function downloadPng() {
  const button = $("download-png");
  button.disabled = true;
  $("status").textContent = "drawing the side-by-side PNG…";
  try {
    const response = await call("/v1/compare/png", { method: "POST", body: formOf(state.request) });
    download(await response.blob(), filenameOf(response));
    $("status").textContent = "side-by-side PNG downloaded";
  } catch (err) {
    $("status").textContent = `error: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// --- capability table -----------------------------------------------------------------------
function renderCapabilities() {
  const body = $("capabilities").tBodies[0];
  body.replaceChildren();
  const caps = state.models.map((m) => m.capabilities || { card: {}, runtime: {}, tasks: [] });
  const vocab = { VOCABULARY_FIXED: " (fixed labels)", VOCABULARY_OPEN: " (zero-shot)" };
  const rows = [
    ["Model", state.models.map((m) => m.capabilities?.card?.name || m.model_name)],
    ["Organization", caps.map((c) => c.card.organization)],
    ["Category", caps.map((c) => c.card.category)],
    ["Modality", caps.map((c) => c.card.modality)],
    ["Release Date", caps.map((c) => c.card.release_date)],
    ["Parameters", caps.map((c) => (c.card.parameter_count ? `${(c.card.parameter_count / 1e6).toFixed(1)}M` : ""))],
    ["License", caps.map((c) => c.card.license)],
    ["Tasks", caps.map((c) => (c.tasks || []).map((t) => taskTitle(t.task) + (vocab[t.vocabulary] || "")).join("; "))],
    ["Features", caps.map((c) => (c.card.features || []).join(", "))],
    ["State", state.models.map((m) => (m.state === "MODEL_STATE_SERVING" ? "serving" : `unavailable: ${m.error || ""}`))],
    ["Device", caps.map((c) => c.runtime.device)],
    ["Weights", caps.map((c) => `${c.runtime.weights || ""}${c.runtime.pretrained ? "" : " (pretrained=false)"}`)],
  ];
  for (const [name, values] of rows) {
    const row = body.insertRow();
    row.append(el("th", { scope: "row", textContent: name }));
    for (const v of values) row.insertCell().textContent = v ?? "";
  }
}

// --- wiring ----------------------------------------------------------------------------
function setup() {
  $("file").addEventListener("change", (e) => e.target.files[0] && setImage(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) setImage(e.dataTransfer.files[0]);
  });
  $("sample").addEventListener("change", (e) => e.target.value && chooseSample(e.target.value));
  $("task").addEventListener("change", onTaskChange);
  $("labels").addEventListener("input", () => { state.labelsEdited = true; updateLabels(); });
  $("labels-reset").addEventListener("click", () => { state.labelsEdited = false; updateLabels(); $("labels").focus(); });
  $("run").addEventListener("click", runCompare);
  $("highlight-unmatched").addEventListener("change", repaint);
  $("labelmap-opacity").addEventListener("input", () => {
    $("labelmap-opacity-value").textContent = fmt($("labelmap-opacity").value);
    repaint();
  });
  $("labelmap-outline").addEventListener("change", repaint);
  $("threshold-all").addEventListener("input", () => {
    const value = Number($("threshold-all").value);
    $("threshold-all-value").textContent = fmt(value);
    for (const view of state.views) view.threshold = value;
    repaint();
  });
  $("download-json").addEventListener("click", () => {
    const text = JSON.stringify(state.result, null, 2);
    download(new Blob([text], { type: "application/json" }), state.resultFilename);
  });
  $("download-png").addEventListener("click", downloadPng);
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) $("viewer").close(); });  // the backdrop
  setupPrompts();
  loadModels().catch((err) => { $("status").textContent = `cannot load models: ${err.message}`; });
  // A new visitor starts on the bundled sample (unless they chose an image first).
  loadSamples().then((names) => { if (names.length && state.imageToken === 0) chooseSample(names[0]); }).catch(() => {});
}

document.addEventListener("DOMContentLoaded", setup);
