// convscope serve: the pages. Plain JS, no libraries, nothing fetched from outside the server.
"use strict";

const $ = (id) => document.getElementById(id);
const page = location.pathname.replace(/^\/+|\/+$/g, "") || "explore";
const state = { info: null, image: null, model: null, jobs: new Map() };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) body = await response.json();
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function postJob(job, wait) {
  return api(`/api/jobs${wait ? "?wait=true" : ""}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ job }),
  });
}

const resultUrl = (id, download) => `/api/results/${id}.png${download ? "?download=1" : ""}`;

function setImg(img, src) {
  img.src = src;
  img.hidden = false;
}

function setProgress(bar, fraction) {
  bar.hidden = false;
  bar.firstElementChild.style.width = `${Math.round(100 * Math.max(0, Math.min(1, fraction || 0)))}%`;
}

// --- the current image, kept across pages for as long as the server has it ---

function setImage(image) {
  state.image = image;
  sessionStorage.setItem("convscope.image", JSON.stringify(image));
  setImg($("current"), `/api/images/${image.id}.png`);
  $("current-label").textContent = `${image.label} · ${image.width}×${image.height}`;
  document.dispatchEvent(new CustomEvent("image"));
}

async function upload(file) {
  showError("");
  const image = await api(`/api/images?name=${encodeURIComponent(file.name)}`, {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body: file,
  });
  return image;
}

async function sample(name) {
  return api(`/api/samples/${encodeURIComponent(name)}`, { method: "POST" });
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => {
    const o = document.createElement("option");
    o.value = o.textContent = v;
    if (v === chosen) o.selected = true;
    return o;
  }));
}

async function restoreImage() {
  const kept = sessionStorage.getItem("convscope.image");
  if (!kept) return;
  const image = JSON.parse(kept);
  const probe = await fetch(`/api/images/${image.id}.png`, { method: "GET" });
  if (probe.ok) setImage(image);
}

function defaultModel(models, preferStyle) {
  if (preferStyle && models.includes("vgg16")) return "vgg16";
  return models.find((m) => m !== "vgg16") || models[0];
}

async function setupPicker() {
  const info = state.info;
  const sampleSelect = $("sample");
  for (const s of info.samples) {
    const o = document.createElement("option");
    o.value = o.textContent = s;
    sampleSelect.append(o);
  }
  sampleSelect.addEventListener("change", async () => {
    if (!sampleSelect.value) return;
    try { setImage(await sample(sampleSelect.value)); } catch (e) { showError(e.message); }
  });
  $("upload").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    try { setImage(await upload(file)); } catch (e) { showError(e.message); }
    ev.target.value = "";
  });
  fillSelect($("model"), info.models, defaultModel(info.models, page === "synthesize"));
  state.model = $("model").value;
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    document.dispatchEvent(new CustomEvent("model"));
  });
  if (page === "stylize") $("model-label").hidden = true;
}

// --- live jobs: server-sent events ---

function follow(job, handlers) {
  const source = new EventSource(`/api/jobs/${job.id}/events`);
  source.addEventListener("progress", (ev) => handlers.progress && handlers.progress(JSON.parse(ev.data)));
  source.addEventListener("status", (ev) => handlers.status && handlers.status(JSON.parse(ev.data)));
  source.addEventListener("end", (ev) => {
    source.close();
    handlers.end && handlers.end(JSON.parse(ev.data));
  });
  source.onerror = () => { source.close(); handlers.end && handlers.end(null); };
  return source;
}

function describe(summary) {
  if (summary.state === "queued") return `queued (place ${summary.position})`;
  if (summary.state === "running" && summary.last) {
    const l = summary.last;
    return `running: ${l.done}/${l.total ?? "?"} ${l.unit}`;
  }
  if (summary.state === "failed") return `failed: ${summary.error}`;
  return summary.state;
}

// --- Explore ---

async function setupExplore() {
  const layer = $("layer");
  let layers = [];
  async function loadModel() {
    const m = await api(`/api/models/${encodeURIComponent(state.model)}`);
    layers = m.layers;
    layer.replaceChildren(...layers.map((l) => {
      const o = document.createElement("option");
      o.value = l.name;
      o.textContent = `${l.name} · ${l.shape.join("×")}`;
      return o;
    }));
    const wanted = layers.find((l) => l.name === m.default_layer || l.dotted === m.default_layer);
    layer.value = wanted ? wanted.name : layers[Math.floor(layers.length / 2)].name;
  }
  async function predict() {
    if (!state.image) return;
    const list = $("predictions");
    list.replaceChildren();
    const done = await postJob({ kind: "predict", model: state.model, image: state.image.id }, true);
    for (const p of done.result.predictions) {
      const li = document.createElement("li");
      li.dataset.index = p.index;
      li.textContent = `${p.name} — ${(100 * p.prob).toFixed(1)}%`;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${Math.max(2, 300 * p.prob)}px`;
      li.append(bar);
      list.append(li);
    }
  }
  let grid = null;
  async function showLayer() {
    if (!state.image || !layer.value) return;
    const done = await postJob({ kind: "activations", model: state.model, image: state.image.id, layer: layer.value }, true);
    grid = done.result;
    const img = $("grid");
    const scale = Math.max(1, Math.floor(48 / grid.tile));
    img.onload = () => { img.style.width = `${img.naturalWidth * scale}px`; };
    img.dataset.layer = grid.layer;
    setImg(img, resultUrl(grid.sprite));
    $("grid-caption").textContent =
      `${grid.layer}: ${grid.channels} channels of ${grid.size[0]}×${grid.size[1]}` +
      (grid.shown < grid.channels ? ` (the first ${grid.shown} shown)` : "") +
      ` · ${grid.caption} · strongest: ${grid.strongest.join(", ")} · click a channel`;
    const link = $("grid-download");
    link.href = resultUrl(grid.grid, true);
    link.hidden = false;
    $("channel-view").hidden = true;
  }
  async function showChannel(c) {
    const done = await postJob({ kind: "channel", model: state.model, image: state.image.id, layer: grid.layer, channel: c }, true);
    const r = done.result;
    $("channel-view").hidden = false;
    $("channel-title").textContent = `${grid.layer} · channel ${c}`;
    setImg($("channel-overlay"), resultUrl(r.overlay));
    $("channel-stats").textContent = `max ${r.max.toFixed(3)} · mean ${r.mean.toFixed(3)}`;
    const patches = $("channel-patches");
    const scan = $("scan");
    scan.dataset.channel = c;
    if (r.patches) {
      setImg(patches, resultUrl(r.patches));
      $("patches-note").textContent = `top patches of ${state.info.dataset} (with guided backprop)`;
      scan.hidden = true;
    } else {
      patches.hidden = true;
      $("patches-note").textContent = state.info.dataset
        ? `no scan of ${state.info.dataset} at this layer yet`
        : "start the server with --dataset NAME to see this channel's top dataset patches";
      scan.hidden = !state.info.dataset;
    }
  }
  $("grid").addEventListener("click", (ev) => {
    if (!grid) return;
    const img = ev.currentTarget;
    const rect = img.getBoundingClientRect();
    const tile = (rect.width / img.naturalWidth) * grid.tile;
    const col = Math.floor((ev.clientX - rect.left) / tile);
    const row = Math.floor((ev.clientY - rect.top) / tile);
    const c = row * grid.ncol + col;
    if (col < grid.ncol && c < grid.shown) showChannel(c).catch((e) => showError(e.message));
  });
  $("scan").addEventListener("click", async () => {
    const scan = $("scan");
    scan.disabled = true;
    try {
      const job = await postJob({ kind: "scan", model: state.model, layer: grid.layer });
      follow(job, {
        progress: (e) => setProgress($("scan-progress"), e.total ? e.done / e.total : 0),
        end: async (s) => {
          scan.disabled = false;
          $("scan-progress").hidden = true;
          if (s && s.state === "failed") showError(s.error);
          else await showChannel(Number(scan.dataset.channel));
        },
      });
    } catch (e) { scan.disabled = false; showError(e.message); }
  });
  const run = (fn) => () => fn().catch((e) => showError(e.message));
  layer.addEventListener("change", run(showLayer));
  document.addEventListener("image", run(async () => { await predict(); await showLayer(); }));
  document.addEventListener("model", run(async () => { await loadModel(); await predict(); await showLayer(); }));
  await loadModel();
}

// --- Attribute ---

async function setupAttribute() {
  const box = $("methods");
  const chosen = ["gradient", "guided", "gradcam"];
  for (const m of state.info.methods) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = m;
    input.checked = chosen.includes(m);
    label.append(input, ` ${m}`);
    box.append(label);
  }
  $("attr-run").addEventListener("click", async () => {
    if (!state.image) { showError("Upload or pick an image first."); return; }
    const methods = [...box.querySelectorAll("input:checked")].map((i) => i.value);
    const target = $("attr-target").value.trim() || null;
    showError("");
    $("attr-run").disabled = true;
    try {
      const job = await postJob({
        kind: "attribute", model: state.model, image: state.image.id, methods,
        target, faithfulness_steps: Number($("attr-steps").value) || 16,
      });
      follow(job, {
        progress: (e) => {
          setProgress($("attr-progress"), e.total ? e.done / e.total : 0);
          $("attr-status").textContent = `${e.task}: ${e.message || ""} ${e.done}/${e.total ?? "?"}`;
        },
        status: (s) => { $("attr-status").textContent = describe(s); },
        end: (s) => {
          $("attr-run").disabled = false;
          $("attr-progress").hidden = true;
          if (!s || s.state !== "done") { if (s) showError(s.error || s.state); return; }
          const r = s.result;
          $("attr-status").textContent = `explaining ${r.target}` + (r.probability == null ? "" : ` (p = ${(100 * r.probability).toFixed(1)}%)`);
          setImg($("attr-panel"), resultUrl(r.panel));
          const body = $("faith").querySelector("tbody");
          body.replaceChildren(...r.faithfulness.map((row) => {
            const tr = document.createElement("tr");
            for (const v of [row.method, row.deletion.toFixed(3), row.insertion.toFixed(3)]) {
              const td = document.createElement("td");
              td.textContent = v;
              tr.append(td);
            }
            return tr;
          }));
          setImg($("cutout"), resultUrl(r.cutout));
          $("cutout-note").textContent = `GrabCut seeded by ${methods[0]}: the object covers ${(100 * r.coverage).toFixed(0)}% of the image`;
        },
      });
    } catch (e) { $("attr-run").disabled = false; showError(e.message); }
  });
}

// --- Synthesize ---

function knobValue(id, kind) {
  const el = $(id);
  if (el.closest("label").hidden) return undefined;
  if (el.type === "checkbox") return el.checked;
  const v = el.value.trim();
  if (v === "") return undefined;
  if (kind === "number") return Number(v);
  if (kind === "target") return /^\d+$/.test(v) ? Number(v) : v;
  return v;
}

function renderJobs() {
  const list = $("jobs");
  list.replaceChildren(...[...state.jobs.values()].reverse().map((s) => {
    const li = document.createElement("li");
    li.dataset.job = s.id;
    li.dataset.state = s.state;
    const name = document.createElement("span");
    name.textContent = s.kind;
    const st = document.createElement("span");
    st.className = "state";
    st.textContent = describe(s);
    li.append(name, st);
    if (s.state === "queued" || s.state === "running") {
      const b = document.createElement("button");
      b.className = "small cancel";
      b.textContent = "cancel";
      b.addEventListener("click", () => api(`/api/jobs/${s.id}`, { method: "DELETE" }).catch((e) => showError(e.message)));
      li.append(b);
    } else if (s.state === "done" && s.result && s.result.image) {
      const a = document.createElement("a");
      a.href = resultUrl(s.result.image, true);
      a.textContent = "download";
      li.append(a);
    }
    return li;
  }));
}

async function setupSynthesize() {
  const recipe = $("recipe");
  const styleSelect = $("style-sample");
  fillSelect(styleSelect, state.info.samples, "brick");
  let style = null;
  function showStyle(image) {
    style = image;
    $("style-thumb").src = `/api/images/${image.id}.png`;
  }
  async function chooseStyle() {
    if (!styleSelect.value) return;
    try { showStyle(await sample(styleSelect.value)); } catch (e) { showError(e.message); }
  }
  styleSelect.addEventListener("change", chooseStyle);
  $("style-upload").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    try {
      showStyle(await upload(file));
      const mine = document.createElement("option");
      mine.value = "";
      mine.textContent = `uploaded: ${file.name}`;
      styleSelect.querySelector("option[value='']")?.remove();
      styleSelect.prepend(mine);
      styleSelect.value = "";
    } catch (e) { showError(e.message); }
  });
  function showKnobs() {
    const r = recipe.value;
    for (const el of document.querySelectorAll("[data-knob]")) {
      const kinds = el.dataset.knob.split(" ");
      el.hidden = !kinds.includes(r);
    }
    $("picker").hidden = r === "visualize" || r === "texture";
    const styleModel = r === "style" || r === "texture";
    const wanted = defaultModel(state.info.models, styleModel);
    if ($("model").value !== wanted && state.info.models.includes(wanted)) {
      $("model").value = wanted;
      state.model = wanted;
    }
  }
  recipe.addEventListener("change", showKnobs);
  showKnobs();
  await chooseStyle();
  let watching = null;
  $("synth-run").addEventListener("click", async () => {
    showError("");
    const r = recipe.value;
    const params = {
      steps: knobValue("k-steps", "number"), size: knobValue("k-size", "number"),
      seed: knobValue("k-seed", "number"), target: knobValue("k-target", "target"),
      layer: knobValue("k-layer"), channel: knobValue("k-channel", "number"),
      preset: knobValue("k-preset"), eps: knobValue("k-eps", "number"),
      untargeted: knobValue("k-untargeted"), octaves: knobValue("k-octaves", "number"),
      style_weight: knobValue("k-style-weight", "number"), content_weight: knobValue("k-content-weight", "number"),
    };
    for (const k of Object.keys(params)) if (params[k] === undefined) delete params[k];
    const needsImage = !["visualize", "texture"].includes(r);
    if (needsImage && !state.image) { showError("Upload or pick an image first."); return; }
    const body = { kind: "synthesize", recipe: r, model: state.model, params };
    if (needsImage) body.image = state.image.id;
    if ((r === "style" || r === "texture") && style) body.style = style.id;
    try {
      const job = await postJob(body);
      state.jobs.set(job.id, job);
      renderJobs();
      watch(job);
    } catch (e) { showError(e.message); }
  });
  function watch(job) {
    const preview = $("synth-preview");
    let seen = 0;
    follow(job, {
      progress: (e) => {
        if (watching !== job.id) { watching = job.id; $("synth-download").hidden = true; }
        setProgress($("synth-progress"), e.total ? e.done / e.total : 0);
        const loss = e.metrics && e.metrics.loss !== undefined ? ` · loss ${e.metrics.loss.toPrecision(4)}` : "";
        $("synth-status").textContent = `${job.kind}: ${e.done}/${e.total ?? "?"} ${e.unit}${loss}`;
        $("synth-status").dataset.events = Number($("synth-status").dataset.events || 0) + 1;
        if (e.preview !== null && e.preview !== undefined && e.preview !== seen) {
          seen = e.preview;
          preview.dataset.version = seen;
          setImg(preview, `/api/jobs/${job.id}/preview.png?v=${seen}`);
        }
      },
      status: (s) => { state.jobs.set(s.id, s); renderJobs(); },
      end: (s) => {
        if (s) { state.jobs.set(s.id, s); renderJobs(); }
        if (watching === job.id || watching === null) {
          $("synth-progress").hidden = true;
          if (s && s.state === "done" && s.result.image) {
            setImg(preview, resultUrl(s.result.image));
            preview.dataset.version = "final";
            const a = $("synth-download");
            a.href = resultUrl(s.result.image, true);
            a.hidden = false;
            $("synth-status").textContent = `${s.kind}: done`;
          } else if (s && s.state === "failed") {
            showError(s.error);
          } else if (s) {
            $("synth-status").textContent = `${s.kind}: ${s.state}`;
          }
        }
      },
    });
  }
}

// --- Stylize ---

async function setupStylize() {
  const net = await api("/api/stylenet");
  const styles = net.styles;
  $("styles-note").textContent = `${net.name}: ${styles.join(", ")}`;
  fillSelect($("style-a"), styles, styles[0]);
  fillSelect($("style-b"), styles, styles[Math.min(1, styles.length - 1)]);
  const corners = document.querySelectorAll("#pad i");
  corners.forEach((el, k) => { el.textContent = styles[k % styles.length]; });
  let mode = "slider";
  let pad = [0, 0];
  let busy = false;
  let again = false;

  function weights() {
    const w = new Array(styles.length).fill(0);
    if (mode === "slider") {
      const t = Number($("blend").value) / 100;
      w[$("style-a").selectedIndex] += 1 - t;
      w[$("style-b").selectedIndex] += t;
    } else {
      const [x, y] = pad; // bilinear weights of the four corners: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
      const corner = [(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y];
      corner.forEach((v, k) => { w[k % styles.length] += v; });
    }
    return w;
  }
  async function render() {
    if (!state.image) return;
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const t0 = performance.now();
        const done = await postJob({ kind: "stylize", image: state.image.id, weights: weights(), size: Number($("st-size").value) }, true);
        const img = $("stylized");
        await new Promise((resolve) => { img.onload = img.onerror = resolve; setImg(img, resultUrl(done.result.image)); });
        img.dataset.weights = weights().map((v) => v.toFixed(3)).join(",");
        $("st-time").textContent = `${Math.round(performance.now() - t0)} ms`;
        const a = $("st-download");
        a.href = resultUrl(done.result.image, true);
        a.hidden = false;
      } while (again);
    } catch (e) { showError(e.message); } finally { busy = false; }
  }
  $("blend").addEventListener("input", render);
  $("style-a").addEventListener("change", render);
  $("style-b").addEventListener("change", render);
  $("st-size").addEventListener("change", render);
  for (const radio of document.querySelectorAll("input[name=blend-mode]")) {
    radio.addEventListener("change", () => {
      mode = radio.value;
      $("slider-box").hidden = mode !== "slider";
      $("pad-box").hidden = mode !== "pad";
      render();
    });
  }
  const padEl = $("pad");
  function movePad(ev) {
    const rect = padEl.getBoundingClientRect();
    pad = [Math.min(1, Math.max(0, (ev.clientX - rect.left) / rect.width)), Math.min(1, Math.max(0, (ev.clientY - rect.top) / rect.height))];
    $("pad-dot").style.left = `${pad[0] * 100}%`;
    $("pad-dot").style.top = `${pad[1] * 100}%`;
    render();
  }
  padEl.addEventListener("pointerdown", (ev) => { padEl.setPointerCapture(ev.pointerId); movePad(ev); });
  padEl.addEventListener("pointermove", (ev) => { if (ev.buttons) movePad(ev); });
  document.addEventListener("image", render);
}

// --- start ---

async function start() {
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  for (const s of document.querySelectorAll("section[data-for]")) s.hidden = s.dataset.for !== page;
  try {
    state.info = await api("/api/info");
    $("server").textContent = `${state.info.device} · queue limit ${state.info.queue_limit}`;
    await setupPicker();
    const setup = { explore: setupExplore, attribute: setupAttribute, synthesize: setupSynthesize, stylize: setupStylize }[page];
    await setup();
    await restoreImage();
    document.body.dataset.ready = "true";
  } catch (e) {
    showError(e.message);
    document.body.dataset.ready = "error";
  }
}

start();
