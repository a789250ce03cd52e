// The comparison page: plain JS over the gateway's JSON API (/v1/models, /v1/compare).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], blob: null, image: null, points: [], boxes: [], result: null };
const PROMPT_TASKS = new Set(["TASK_PROMPTED_SEGMENTATION"]);
const LABEL_TASKS = new Set(["TASK_ZERO_SHOT_CLASSIFICATION", "TASK_SEMANTIC_SEGMENTATION",
  "TASK_OBJECT_DETECTION", "TASK_INSTANCE_SEGMENTATION"]);

const taskTitle = (t) => t.replace(/^TASK_/, "").toLowerCase().replace(/_/g, " ");
const colour = (i, a = 1) => `hsla(${(i * 137.508) % 360}, 80%, 50%, ${a})`;

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

// --- API -------------------------------------------------------------------------------
async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${response.status} ${body.code || ""}: ${body.message || response.statusText}`);
  return body;
}

async function loadModels() {
  const body = await api("/v1/models");
  state.models = body.models || [];
  renderTaskChoices();
  renderCapabilities();
}

function servingModels() { return state.models.filter((m) => m.state === "MODEL_STATE_SERVING"); }

function taskServers(task) {
  return servingModels().filter((m) => (m.capabilities?.tasks || []).some((t) => t.task === task));
}

function renderTaskChoices() {
  const select = $("task"), previous = select.value;
  const tasks = new Set();
  for (const m of servingModels()) for (const t of m.capabilities?.tasks || []) tasks.add(t.task);
  select.replaceChildren();
  for (const task of [...tasks].sort()) {
    const servers = taskServers(task).map((m) => m.model_name);
    const option = new Option(`${taskTitle(task)} ${servers.length > 1 ? "(comparable)" : `(only ${servers[0]})`}`, task);
    select.add(option);
  }
  if ([...tasks].includes(previous)) select.value = previous;
  else if (tasks.has("TASK_INSTANCE_SEGMENTATION")) select.value = "TASK_INSTANCE_SEGMENTATION";
  onTaskChange();
}

function fixedVocabulary(task) {
  for (const m of taskServers(task)) {
    const t = m.capabilities.tasks.find((x) => x.task === task);
    if (t.vocabulary === "VOCABULARY_FIXED" && t.label_names?.length) return t.label_names;
  }
  return [];
}

function onTaskChange() {
  const task = $("task").value;
  const servers = taskServers(task).map((m) => m.model_name);
  $("task-help").textContent = servers.length ? `served by ${servers.join(", ")}` : "";
  const open = taskServers(task).some((m) => m.capabilities.tasks.find((t) => t.task === task).vocabulary === "VOCABULARY_OPEN");
  $("labels-row").hidden = !(open && LABEL_TASKS.has(task));
  if (!$("labels").value) $("labels").value = fixedVocabulary(task).join(", ");
  $("prompt-area").hidden = !PROMPT_TASKS.has(task);
  drawPromptCanvas();
  updateRunButton();
}

function updateRunButton() { $("run").disabled = !state.blob || !$("task").value; }

// --- image choice ----------------------------------------------------------------------
async function setImage(blob) {
  state.blob = blob;
  state.points = []; state.boxes = [];
  state.image = await createImageBitmap(blob, { imageOrientation: "from-image" });
  drawPromptCanvas();
  updateRunButton();
  $("status").textContent = `image ${state.image.width}×${state.image.height}`;
}

async function loadSamples() {
  const names = await api("/v1/samples");
  for (const name of names) $("sample").add(new Option(name, name));
}

// --- prompts ---------------------------------------------------------------------------
let dragStart = null;
function canvasPoint(canvas, event) {
  const r = canvas.getBoundingClientRect();
  return { x: (event.clientX - r.left) * canvas.width / r.width, y: (event.clientY - r.top) * canvas.height / r.height };
}

function drawPromptCanvas(preview) {
  const canvas = $("prompt-canvas");
  if (!state.image || $("prompt-area").hidden) return;
  canvas.width = state.image.width; canvas.height = state.image.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(state.image, 0, 0);
  ctx.lineWidth = Math.max(2, canvas.width / 300);
  for (const b of [...state.boxes, ...(preview ? [preview] : [])]) {
    ctx.strokeStyle = "#f5b400"; ctx.strokeRect(b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1);
  }
  for (const p of state.points) {
    ctx.fillStyle = p.positive ? "#1bbf4b" : "#e0362c";
    ctx.beginPath(); ctx.arc(p.x, p.y, Math.max(4, canvas.width / 120), 0, 2 * Math.PI); ctx.fill();
  }
  $("prompt-summary").textContent = `${state.points.length} point(s), ${state.boxes.length} box(es)`;
}

function setupPrompts() {
  const canvas = $("prompt-canvas");
  canvas.addEventListener("mousedown", (e) => { dragStart = canvasPoint(canvas, e); });
  canvas.addEventListener("mousemove", (e) => {
    if (!dragStart) return;
    const p = canvasPoint(canvas, e);
    drawPromptCanvas(box(dragStart, p));
  });
  canvas.addEventListener("mouseup", (e) => {
    const p = canvasPoint(canvas, e), start = dragStart;
    dragStart = null;
    if (!start) return;
    if (Math.hypot(p.x - start.x, p.y - start.y) > 6) state.boxes.push(box(start, p));
    else state.points.push({ x: p.x, y: p.y, positive: !e.shiftKey });
    drawPromptCanvas();
  });
  $("clear-prompts").addEventListener("click", () => { state.points = []; state.boxes = []; drawPromptCanvas(); });
}
const box = (a, b) => ({ x1: Math.min(a.x, b.x), y1: Math.min(a.y, b.y), x2: Math.max(a.x, b.x), y2: Math.max(a.y, b.y) });

// --- compare ---------------------------------------------------------------------------
async function runCompare() {
  const task = $("task").value, options = {};
  if (!$("labels-row").hidden) {
    const labels = $("labels").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (labels.length) options.labels = labels;
  }
  if (PROMPT_TASKS.has(task)) {
    options.prompts = { points: state.points, boxes: state.boxes, multimask_output: false };
  }
  const form = new FormData();
  form.append("image", state.blob, "image");
  form.append("task", task);
  form.append("options", JSON.stringify(options));
  $("run").disabled = true;
  $("status").textContent = "running…";
  try {
    state.result = await api("/v1/compare", { method: "POST", body: form });
    $("status").textContent = `done: ${state.result.results.length} model(s)`;
    renderResults();
  } catch (err) {
    $("status").textContent = `error: ${err.message}`;
  } finally {
    updateRunButton();
  }
}

function outputOf(result) { return result.detect || result.segment || result.classify || null; }

function unmatchedSets() {  // model name -> Set of instance indices matched by no pair
  const matched = {};
  for (const pair of state.result.agreements || []) {
    if (!pair.instances) continue;
    for (const m of pair.instances.matches || []) {
      (matched[pair.model_a] ??= new Set()).add(m.index_a || 0);
      (matched[pair.model_b] ??= new Set()).add(m.index_b || 0);
    }
  }
  return matched;
}

function renderResults() {
  const panels = $("panels");
  panels.replaceChildren();
  const matched = unmatchedSets();
  const highlight = $("highlight-unmatched").checked && (state.result.agreements || []).length > 0;
  for (const result of state.result.results) {
    const panel = document.createElement("article");
    panel.className = "panel";
    panel.dataset.model = result.model_name;
    const title = document.createElement("h3");
    title.textContent = result.model_name;
    const meta = document.createElement("div");
    meta.className = "meta";
    const output = outputOf(result);
    const ok = !result.status?.code && output;
    meta.textContent = `${Math.round(result.latency_ms || 0)} ms · ${ok ? "OK" : "error"}` +
      (output?.info?.weights ? ` · weights ${output.info.weights}` : "");
    panel.append(title, meta);
    if (output?.info?.warnings?.length) {
      const warn = document.createElement("div");
      warn.className = "meta warn";
      warn.textContent = `⚠ ${output.info.warnings.join("; ")}`;
      panel.append(warn);
    }
    if (!ok) {
      panel.classList.add("error");
      const err = document.createElement("p");
      err.className = "error-text";
      err.textContent = `${result.status?.code ?? "?"}: ${result.status?.message || "no output"}`;
      panel.append(err);
    } else {
      panel.append(drawResult(output, highlight ? matched[result.model_name] || new Set() : null));
    }
    panels.append(panel);
  }
  renderAgreement();
}

function drawResult(output, matched) {
  const canvas = document.createElement("canvas");
  canvas.width = state.image.width; canvas.height = state.image.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(state.image, 0, 0);
  const instances = output.instances || [];
  const masks = instances.map((inst) => (inst.mask?.rle ? decodeMask(inst.mask.rle) : null));
  const frame = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const tint = (mask, rgb, alpha) => { for (let i = 0; i < mask.length; i++) if (mask[i]) tintPixel(frame, i, rgb, alpha); };
  instances.forEach((inst, i) => {
    if (masks[i] && masks[i].length === canvas.width * canvas.height) {
      const faded = matched && matched.has(i);
      tint(masks[i], hslToRgb((i * 137.508) % 360), faded ? 0.15 : 0.45);
    }
  });
  if (output.label_map) {
    const lm = output.label_map, bytes = Uint8Array.from(atob(lm.class_indices_u16le || ""), (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < lm.width * lm.height; i++) {
      const k = view.getUint16(2 * i, true);
      if (k) tintPixel(frame, i, hslToRgb((k * 137.508) % 360), 0.5);
    }
  }
  ctx.putImageData(frame, 0, 0);
  ctx.lineWidth = Math.max(2, canvas.width / 300);
  ctx.font = `${Math.max(11, Math.round(canvas.width / 45))}px system-ui`;
  instances.forEach((inst, i) => {
    const b = inst.box || {}, x1 = b.x1 || 0, y1 = b.y1 || 0, x2 = b.x2 || 0, y2 = b.y2 || 0;
    const unmatched = matched && !matched.has(i);
    ctx.setLineDash(unmatched ? [8, 4] : []);
    ctx.lineWidth = unmatched ? Math.max(4, canvas.width / 150) : Math.max(2, canvas.width / 300);
    ctx.strokeStyle = matched && !unmatched ? colour(i, 0.35) : colour(i);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    ctx.fillStyle = colour(i);
    ctx.fillText(`${inst.label?.name ?? "mask"} ${(inst.score || 0).toFixed(2)}`, x1 + 2, Math.max(y1 - 3, 12));
    for (const k of inst.keypoints || []) { ctx.beginPath(); ctx.arc(k.x || 0, k.y || 0, 3, 0, 2 * Math.PI); ctx.fill(); }
  });
  ctx.setLineDash([]);
  const wrap = document.createElement("div");
  wrap.append(canvas);
  if (output.scores) {
    const list = document.createElement("ul");
    list.className = "scores";
    for (const s of output.scores) {
      const li = document.createElement("li");
      const bar = document.createElement("span");
      bar.className = "bar"; bar.style.width = `${Math.round(100 * (s.label.score || 0))}px`;
      li.append(bar, `${s.label.name} ${(100 * (s.label.score || 0)).toFixed(1)}% (sim ${(s.similarity || 0).toFixed(3)})`);
      list.append(li);
    }
    wrap.append(list);
  }
  canvas.addEventListener("mousemove", (e) => hover(e, canvas, instances, masks));
  canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  return wrap;
}

function tintPixel(frame, i, rgb, alpha) {
  const o = 4 * i;
  for (let c = 0; c < 3; c++) frame.data[o + c] = frame.data[o + c] * (1 - alpha) + rgb[c] * alpha;
}

function hslToRgb(h) {
  const f = (n) => { const k = (n + h / 30) % 12; return 255 * (0.5 - 0.4 * Math.max(-1, Math.min(k - 3, 9 - k, 1))); };
  return [f(0), f(8), f(4)];
}

function hover(event, canvas, instances, masks) {
  const p = canvasPoint(canvas, event), x = Math.floor(p.x), y = Math.floor(p.y);
  let hit = -1;
  for (let i = instances.length - 1; i >= 0 && hit < 0; i--) {
    const b = instances[i].box || {};
    const inBox = x >= (b.x1 || 0) && x <= (b.x2 || 0) && y >= (b.y1 || 0) && y <= (b.y2 || 0);
    if (masks[i] ? masks[i][y * canvas.width + x] : inBox) hit = i;
  }
  const tip = $("tooltip");
  if (hit < 0) { tip.hidden = true; return; }
  const inst = instances[hit];
  tip.textContent = `${inst.label?.name ?? "mask"}: ${(inst.score || 0).toFixed(3)}`;
  tip.style.left = `${event.clientX + 12}px`; tip.style.top = `${event.clientY + 12}px`;
  tip.hidden = false;
}

function renderAgreement() {
  const box = $("agreement");
  box.replaceChildren();
  const pairs = state.result.agreements || [];
  if (state.result.labels_used?.length) {
    const p = document.createElement("p");
    p.className = "help";
    p.textContent = `Labels sent to open-vocabulary models: ${state.result.labels_used.length} (${state.result.labels_used.slice(0, 10).join(", ")}…)`;
    box.append(p);
  }
  if (!pairs.length) {
    const p = document.createElement("p"); p.className = "help";
    p.textContent = "No agreement figures: fewer than two models returned results.";
    box.append(p); return;
  }
  const table = document.createElement("table");
  table.id = "agreement-table";
  const head = table.insertRow();
  for (const h of ["Models", "Matched", "Mean IoU", "Label agreement", "Only in A", "Only in B"]) {
    const th = document.createElement("th"); th.textContent = h; head.append(th);
  }
  for (const pair of pairs) {
    const row = table.insertRow();
    const cells = pair.instances
      ? [`${pair.model_a} vs ${pair.model_b} (${pair.instances.iou_kind === "IOU_KIND_MASK" ? "mask" : "box"} IoU ≥ ${(pair.instances.iou_threshold || 0).toFixed(2)})`,
        (pair.instances.matches || []).length, (pair.instances.mean_iou || 0).toFixed(3),
        `${Math.round(100 * (pair.instances.label_agreement_rate || 0))}%`,
        pair.instances.only_a_count || 0, pair.instances.only_b_count || 0]
      : [`${pair.model_a} vs ${pair.model_b}`, `top-1 ${pair.classification.top1_agree ? "agrees" : "differs"}`,
        `top-${pair.classification.k || 0} overlap ${(pair.classification.topk_overlap || 0).toFixed(2)}`, "", "", ""];
    for (const c of cells) row.insertCell().textContent = String(c);
  }
  box.append(table);
}

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
    const th = document.createElement("th"); th.scope = "row"; th.textContent = name; row.append(th);
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
  $("sample").addEventListener("change", async (e) => {
    if (!e.target.value) return;
    const response = await fetch(`/samples/${encodeURIComponent(e.target.value)}`);
    setImage(await response.blob());
  });
  $("task").addEventListener("change", () => { $("labels").value = ""; onTaskChange(); });
  $("run").addEventListener("click", runCompare);
  $("highlight-unmatched").addEventListener("change", () => state.result && renderResults());
  setupPrompts();
  loadModels().catch((err) => { $("status").textContent = `cannot load models: ${err.message}`; });
  loadSamples().catch(() => {});
}

document.addEventListener("DOMContentLoaded", setup);
