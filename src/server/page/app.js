// contrastgeo's analyst page. Plain JS over the REST routes (/v1/...): no framework, no bundler, nothing
// fetched from outside this server. The API validates every input; the page only shows its problems
// (RFC 9457, with `field`) next to the field at fault.
"use strict";

const KEY_STORAGE = "contrastgeo.apiKey";
const JOB_STORAGE = "contrastgeo.retrainJob";
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

// ---- The REST API ------------------------------------------------------------------------------------

/** A problem answered by the API (or a network failure), with the field at fault when it names one. */
class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.field = body.field || null;
  }
}

/** Calls the API; resolves with the JSON answer, rejects with a Problem. Writes carry the API key. */
async function api(method, path, body, write = false) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (write && key) headers.authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Problem(0, { detail: `The server cannot be reached (${e.message}).` });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) throw new Problem(response.status, data || { title: response.statusText, detail: text });
  return data;
}

// ---- Errors next to their field ----------------------------------------------------------------------

/** Removes every error shown inside `scope`. */
function clearErrors(scope) {
  for (const el of scope.querySelectorAll(".error")) el.textContent = "";
  for (const el of scope.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** The error element for an API field such as `city.lat` or `examples[2]`: the longest known prefix. */
function errorSlot(scope, field) {
  let name = field;
  while (name) {
    const slot = scope.querySelector(`.error[data-field="${CSS.escape(name)}"]`);
    if (slot) return slot;
    const cut = Math.max(name.lastIndexOf("."), name.lastIndexOf("["));
    name = cut > 0 ? name.slice(0, cut) : "";
  }
  return null;
}

/** Shows `problem` next to its field in `scope` (focusing that field), else in `fallback`. */
function showProblem(scope, problem, fallback, describe = (_field, message) => message) {
  if (problem.status === 401) {
    $("api-key-error").textContent = `${problem.message} Enter the API key here.`;
    $("api-key").setAttribute("aria-invalid", "true");
    fallback.textContent = "This needs the API key (at the top of the page).";
    $("api-key").focus();
    return;
  }
  const slot = problem.field ? errorSlot(scope, problem.field) : null;
  if (!slot) {
    fallback.textContent = problem.message;
    return;
  }
  slot.textContent = describe(problem.field, problem.message);
  const input = scope.querySelector(`[aria-describedby~="${slot.id}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

/** Runs `work` with `button` disabled. */
async function busy(button, work) {
  button.disabled = true;
  try { await work(); } finally { button.disabled = false; }
}

const percent = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
const place = (c) => [c.admin1, c.country].filter((s) => s && s !== c.name).join(", ");
const element = (tag, props = {}, ...children) => {
  const el = Object.assign(document.createElement(tag), props);
  el.append(...children);
  return el;
};

// ---- The map: world-atlas TopoJSON, equirectangular, SVG ----------------------------------------------

let world = null;

/** Land and country borders as SVG path data in the projection's units (lon + 180, 90 - lat). */
function loadWorld() {
  world = world || fetch("/page/countries-110m.json").then((r) => r.json()).then((topology) => {
    const [sx, sy] = topology.transform.scale;
    const [tx, ty] = topology.transform.translate;
    const arcs = topology.arcs.map((arc) => {
      let x = 0, y = 0;
      return arc.map(([dx, dy]) => { x += dx; y += dy; return project(y * sy + ty, x * sx + tx); });
    });
    const xy = ([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`;
    // A border is cut where it crosses the antimeridian; segments along the antimeridian are not drawn.
    const edge = ([x]) => x < 1e-6 || x > 360 - 1e-6;
    const line = (points) => points.map((p, i) => {
      const q = points[i - 1];
      const jump = !q || Math.abs(p[0] - q[0]) > 180 || (edge(p) && edge(q));
      return (jump ? "M" : "L") + xy(p);
    }).join("");
    // A land ring is unwrapped into continuous longitudes, and drawn again 360 degrees over when it crosses.
    const ring = (indexes) => {
      const points = indexes.flatMap((i, n) => {
        const arc = i < 0 ? arcs[~i].slice().reverse() : arcs[i];
        return n === 0 ? arc : arc.slice(1);
      });
      let shift = 0;
      const unwrapped = points.map((p, i) => {
        if (i > 0) shift += Math.round((points[i - 1][0] - p[0]) / 360) * 360;
        return [p[0] + shift, p[1]];
      });
      const path = (dx) => "M" + unwrapped.map(([x, y]) => xy([x + dx, y])).join("L") + "Z";
      const xs = unwrapped.map((p) => p[0]);
      return path(0) + (Math.min(...xs) < 0 ? path(360) : "") + (Math.max(...xs) > 360 ? path(-360) : "");
    };
    const polygons = topology.objects.land.geometries.flatMap((g) => g.type === "Polygon" ? [g.arcs] : g.arcs);
    return {
      land: polygons.flatMap((rings) => rings.map(ring)).join(""),
      borders: arcs.map(line).join(""),
    };
  });
  return world;
}

/** Equirectangular projection to the map's units: x = lon + 180 in [0, 360], y = 90 - lat in [0, 180]. */
function project(lat, lon) { return [lon + 180, 90 - lat]; }

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** A map in `container`: show cities as circles, or let the user pick a point. */
function makeMap(container, label) {
  const root = svg("svg", { viewBox: "0 0 360 180", role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet" });
  const land = svg("path", { class: "land", "fill-rule": "evenodd" });
  const borders = svg("path", { class: "borders" });
  const marks = svg("g");
  root.append(land, borders, marks);
  container.append(root);
  loadWorld().then((w) => { land.setAttribute("d", w.land); borders.setAttribute("d", w.borders); })
    .catch(() => container.setAttribute("title", "The map outline could not be loaded."));
  let width = 360;
  borders.setAttribute("stroke-width", 360 * 0.0022);

  /** Fits the view to points [lat, lon] (at least 60 degrees wide, 2:1, inside the world). */
  function fit(points) {
    const view = (x, y, w) => {
      root.setAttribute("viewBox", `${x} ${y} ${w} ${w / 2}`);
      borders.setAttribute("stroke-width", w * 0.0022);
      width = w;
    };
    if (!points.length) { view(0, 0, 360); return; }
    const xy = points.map(([lat, lon]) => project(lat, lon));
    const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]);
    let w = Math.max(60, (Math.max(...xs) - Math.min(...xs)) * 1.3, (Math.max(...ys) - Math.min(...ys)) * 2.6);
    w = Math.min(360, w);
    const h = w / 2;
    const cx = (Math.max(...xs) + Math.min(...xs)) / 2, cy = (Math.max(...ys) + Math.min(...ys)) / 2;
    const x = Math.min(360 - w, Math.max(0, cx - w / 2)), y = Math.min(180 - h, Math.max(0, cy - h / 2));
    view(x, y, w);
  }

  return {
    /** Shows `cities` ({city_id, name, lat, lon, probability}) sized by probability, `best` highlighted. */
    show(cities, best) {
      marks.replaceChildren();
      // The view fits the likely cities (the answer and any with 5% or more); the rest may lie outside it.
      fit(cities.filter((c) => c.city_id === best || c.probability >= 0.05).map((c) => [c.lat, c.lon]));
      const ordered = [...cities].sort((a, b) => (a.city_id === best) - (b.city_id === best));
      for (const c of ordered) {
        const [x, y] = project(c.lat, c.lon);
        const r = width * (0.005 + 0.02 * Math.sqrt(Math.max(0, c.probability)));
        const dot = svg("circle", { cx: x, cy: y, r, class: c.city_id === best ? "city best" : "city",
          "data-city-id": c.city_id, "data-probability": c.probability });
        const title = svg("title");
        title.textContent = `${c.name}: ${percent(c.probability)}`;
        dot.append(title);
        marks.append(dot);
        if (c.city_id === best) {
          const text = svg("text", { x: x + r + width * 0.006, y: y + width * 0.007, class: "label",
            "font-size": width * 0.024, "stroke-width": width * 0.006 });
          text.textContent = c.name;
          marks.append(text);
        }
      }
      root.setAttribute("aria-label", `${label}: ${cities.map((c) => `${c.name} ${percent(c.probability)}`).join(", ")}`);
    },
    /** Marks one point (a city being defined). */
    mark(lat, lon) {
      marks.replaceChildren();
      if (!Number.isFinite(lat) || !Number.isFinite(lon)) return;
      const [x, y] = project(lat, lon);
      marks.append(svg("circle", { cx: x, cy: y, r: width * 0.008, class: "picked" }));
    },
    /** Calls `pick(lat, lon)` when the map is clicked. */
    onPick(pick) {
      root.addEventListener("click", (event) => {
        const point = root.createSVGPoint();
        point.x = event.clientX;
        point.y = event.clientY;
        const at = point.matrixTransform(root.getScreenCTM().inverse());
        pick(Math.round((90 - at.y) * 1e4) / 1e4, Math.round((at.x - 180) * 1e4) / 1e4);
      });
    },
  };
}

// ---- Server status and the API key ------------------------------------------------------------------

async function showStatus() {
  try {
    const ready = await api("GET", "/readyz");
    $("server-status").textContent = `Ready: ${ready.cities} cities, model ${ready.model}` +
      (ready.read_only ? " (read-only replica: adding cities and retraining are off)" : "");
  } catch (problem) {
    $("server-status").textContent = problem.status === 503
      ? "The model and store are loading…" : `Not ready: ${problem.message}`;
    setTimeout(showStatus, 2000);
  }
}

function setUpKey() {
  const input = $("api-key");
  input.value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors($("key-form"));
    const key = input.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
  });
  input.addEventListener("change", () => $("key-form").requestSubmit());
  $("api-key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    input.value = "";
  });
}

// ---- Try a post -------------------------------------------------------------------------------------

function setUpTry() {
  const form = $("try-form");
  const map = makeMap($("answer-map"), "Map of the shortlist");
  // Enter writes a new line in the box; Ctrl+Enter (or Cmd+Enter) locates the post.
  $("try-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form);
    busy($("try-submit"), async () => {
      try {
        showAnswer(await api("POST", "/v1/locate", { text: $("try-text").value }), map);
      } catch (problem) {
        showProblem(form, problem, $("try-error"));
      }
    });
  });
}

function showAnswer(answer, map) {
  $("answer").hidden = false;
  $("answer-empty").hidden = true;
  $("answer").dataset.cityId = answer.city_id;
  $("answer-name").textContent = answer.name;
  $("answer-place").textContent = place(answer);
  // `city` is null when the engine abstains (confidence below its threshold): the best guess is shown as
  // one, not as the answer.
  const abstained = answer.city === null;
  $("answer").classList.toggle("abstained", abstained);
  $("answer-verdict").hidden = !abstained;
  $("answer-verdict").textContent = abstained ? "Not sure. Best guess:" : "";
  $("answer-probability").textContent = percent(answer.probability) +
    (abstained ? " (below the confidence needed to answer)" : "");
  $("shortlist").replaceChildren(...answer.top_k.map((c) => {
    const bar = element("span");
    bar.style.width = percent(c.probability);
    return element("li", { className: "bar-row" },
      element("span", {}, c.name, element("span", { className: "hint" },
        (place(c) ? ` ${place(c)}` : "") + (c.mention ? ` · the post names “${c.mention}”` : ""))),
      element("span", { className: "bar", role: "presentation" }, bar),
      element("span", { className: "num" }, percent(c.probability)));
  }));
  $("evidence").replaceChildren(...(answer.evidence.length ? answer.evidence.map((e) =>
    element("li", {}, `“${e.text}” `, element("span", { className: "sim" },
      [e.matched_by !== "words" ? `similarity ${e.similarity.toFixed(2)}` : "",
       e.matched_by !== "vector" ? `shares its words (BM25 ${e.bm25.toFixed(1)})` : ""].filter(Boolean).join(" · "))))
    : [element("li", {}, "No support post of this city resembles the post: answered from the city's prompt.")]));
  map.show(answer.top_k, answer.city_id);
}

// ---- Add a city -------------------------------------------------------------------------------------

function setUpAdd() {
  const form = $("add-form");
  const map = makeMap($("pick-map"), "Map for picking a new city's coordinates");
  const options = new Map();
  let chosen = null;
  let searchTimer = 0;
  const field = (id) => $(id).value.trim();
  const coordinates = () => [parseFloat(field("city-lat")), parseFloat(field("city-lon"))];

  const fill = (city) => {
    chosen = city;
    $("city-name").value = city.name;
    $("city-admin1").value = city.admin1 || "";
    $("city-country").value = city.country || "";
    $("city-country-code").value = city.country_code || "";
    $("city-lat").value = city.lat;
    $("city-lon").value = city.lon;
    $("city-aliases").value = (city.alternate_names || []).join(", ");
    $("city-search-note").textContent = `Posts will be added to ${city.name} (id ${city.id}) of the store.`;
    map.mark(city.lat, city.lon);
  };
  $("city-search").addEventListener("input", () => {
    const q = $("city-search").value;
    clearTimeout(searchTimer);
    if (!q && chosen) {
      // The picked city is let go: the form is blank again for a new city.
      for (const input of form.querySelectorAll("fieldset input")) input.value = "";
      chosen = null;
      map.mark(NaN, NaN);
      $("city-search-note").textContent = "";
    }
    // Every city listed so far stays known by its option text, so picking (or typing) one fills the form.
    if (options.has(q)) { fill(options.get(q)); return; }
    searchTimer = setTimeout(async () => {
      if (!q.trim()) { $("city-options").replaceChildren(); return; }
      try {
        const { cities } = await api("GET", `/v1/cities?q=${encodeURIComponent(q.trim())}&limit=8`);
        if ($("city-search").value !== q) return;
        $("city-options").replaceChildren(...cities.map((c) => {
          const text = `${[c.name, place(c)].filter(Boolean).join(", ")} (id ${c.id})`;
          options.set(text, c);
          return element("option", { value: text });
        }));
        $("city-search-note").textContent = cities.length
          ? `${cities.length} matching cities: pick one, or define a new city below.`
          : "No city of the store starts with that: define a new city below.";
      } catch (problem) {
        $("city-search-note").textContent = problem.message;
      }
    }, 150);
  });
  for (const id of ["city-name", "city-lat", "city-lon"]) {
    $(id).addEventListener("input", () => {
      if (chosen && (field("city-name") !== chosen.name || coordinates()[0] !== chosen.lat || coordinates()[1] !== chosen.lon)) {
        if (field("city-aliases") === (chosen.alternate_names || []).join(", ")) $("city-aliases").value = "";
        chosen = null;
        $("city-search-note").textContent = "A new city: it gets its own id.";
      }
      if (id !== "city-name") map.mark(...coordinates());
    });
  }
  map.onPick((lat, lon) => {
    $("city-lat").value = lat;
    $("city-lon").value = lon;
    $("city-lat").dispatchEvent(new Event("input"));
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors(form);
    const lines = $("examples").value.split("\n");
    const lineOf = [];
    const examples = [];
    lines.forEach((line, n) => { if (line.trim()) { lineOf.push(n + 1); examples.push(line.trim()); } });
    const body = { city: cityBody(chosen), examples };
    const describe = (f, message) => {
      const at = /^examples\[(\d+)\]/.exec(f);
      return at && lineOf[+at[1]] ? `Line ${lineOf[+at[1]]}: ${message}` : message;
    };
    busy($("add-submit"), async () => {
      try {
        const stored = await api("POST", "/v1/cities", body, true);
        await showStored(stored, examples);
        showModels();
      } catch (problem) {
        showProblem(form, problem, $("add-error"), describe);
      }
    });
  });
}

/** The `city` of `POST /v1/cities` from the form: numbers as numbers, anything else as typed (the API
 * says what is wrong with it). */
function cityBody(chosen) {
  const text = (id) => $(id).value.trim();
  const number = (id) => {
    const raw = text(id);
    if (!raw) return undefined;
    return /^[-+]?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
  };
  const city = { name: text("city-name"), lat: number("city-lat"), lon: number("city-lon") };
  if (chosen) city.id = chosen.id;
  for (const [key, id] of [["admin1", "city-admin1"], ["country", "city-country"], ["country_code", "city-country-code"]]) {
    if (text(id)) city[key] = text(id);
  }
  const aliases = text("city-aliases").split(",").map((s) => s.trim()).filter(Boolean);
  if (aliases.length) city.aliases = aliases;
  return city;
}

async function showStored(stored, examples) {
  const c = stored.city;
  showStatus();
  $("add-result").hidden = false;
  $("add-result").dataset.cityId = c.id;
  $("add-summary").textContent = `${c.name}${place(c) ? `, ${place(c)}` : ""} (id ${c.id}, ${c.lat}, ${c.lon}): ` +
    `${stored.examples_added} posts stored, ${stored.duplicates} already there; answered by version ` +
    `${stored.generation}, searchable after ${stored.searchable_after_ms.toFixed(1)} ms.`;
  const list = $("first-answers");
  list.replaceChildren();
  if (!examples.length) return;
  try {
    const { results } = await api("POST", "/v1/locate", { posts: examples.slice(0, 16).map((text) => ({ text })) });
    list.replaceChildren(...results.map((r, i) => r.city_id === undefined
      ? element("li", {}, `“${examples[i]}”: ${r.detail}`)
      : element("li", {}, `“${examples[i]}” → ${r.name} ${percent(r.probability)} `,
        element("span", { className: r.city_id === c.id ? "ok" : "miss" }, r.city_id === c.id ? "✓" : "✗ another city"))));
  } catch (problem) {
    list.replaceChildren(element("li", {}, problem.message));
  }
}

// ---- Retrain and versions ---------------------------------------------------------------------------

function setUpRetrain() {
  $("retrain-start").addEventListener("click", () => {
    clearErrors($("retrain"));
    busy($("retrain-start"), async () => {
      try {
        const body = {};
        for (const [key, id] of [["epochs", "retrain-epochs"], ["min_steps", "retrain-min-steps"]]) {
          const raw = $(id).value.trim();
          if (raw) body[key] = /^\d+$/.test(raw) ? Number(raw) : raw;
        }
        const { job } = await api("POST", "/v1/retrain", body, true);
        sessionStorage.setItem(JOB_STORAGE, job.id);
        followJob(job);
      } catch (problem) {
        showProblem($("retrain"), problem, $("retrain-error"));
      }
    });
  });
  const running = sessionStorage.getItem(JOB_STORAGE);
  if (running) api("GET", `/v1/jobs/${running}`).then(followJob, () => sessionStorage.removeItem(JOB_STORAGE));
}

/** Shows a job's progress, polling it every second until it ends. */
function followJob(job) {
  $("job").hidden = false;
  $("job").dataset.state = job.state;
  const progress = $("job-progress");
  const p = job.progress || {};
  if (job.state === "running") {
    $("retrain-start").dataset.running = "true";
    if (p.stage === "training") {
      progress.max = p.steps; progress.value = p.step;
      $("job-stage").textContent = `Training: step ${p.step} of ${p.steps}` + (Number.isFinite(p.loss) ? `, loss ${p.loss.toFixed(3)}` : "");
    } else if (p.stage === "indexing") {
      progress.max = p.total || 1; progress.value = p.done;
      $("job-stage").textContent = `Indexing with the new model: ${p.done} of ${p.total}`;
    } else {
      progress.removeAttribute("value");
      $("job-stage").textContent = p.stage === "gating" ? "Checking the new version on held-out posts"
        : p.stage === "swapping" ? "Making the new version live" : "Retraining";
    }
    setTimeout(() => api("GET", `/v1/jobs/${job.id}`).then(followJob,
      (problem) => { $("retrain-error").textContent = problem.message; }), 1000);
    return;
  }
  delete $("retrain-start").dataset.running;
  sessionStorage.removeItem(JOB_STORAGE);
  showStatus();
  progress.max = 1; progress.value = 1;
  const r = job.report || {};
  const gate = r.gate ? ` Held-out Acc@1: live ${percent(r.gate.live_acc)}, new ${percent(r.gate.new_acc)} (${r.gate.held_out} posts).` : "";
  $("job-stage").textContent = { succeeded: "Retrained", rejected: "Retrain kept out by the gate", failed: "Retrain failed" }[job.state] || job.state;
  $("job-report").textContent = job.state === "succeeded" ? `Version ${r.generation} is live.${gate}`
    : job.state === "rejected" ? `Version ${r.parent} stays live${r.reason ? `: ${r.reason}` : ""}.${gate}`
    : job.error || "";
  showModels();
}

async function showModels() {
  $("models-error").textContent = "";
  let list;
  try {
    list = await api("GET", "/v1/models");
  } catch (problem) {
    $("models-error").textContent = problem.message;
    return;
  }
  $("models").querySelector("tbody").replaceChildren(...[...list.models].reverse().map((m) => {
    let status = element("span", {}, "live");
    if (!m.current) {
      status = element("button", { type: "button", textContent: "Make live",
        ariaLabel: `Roll back to version ${m.id}` });
      status.addEventListener("click", () => busy(status, async () => {
        try {
          await api("POST", "/v1/models/rollback", { to: m.id }, true);
          showModels();
          showStatus();
        } catch (problem) {
          showProblem($("retrain"), problem, $("models-error"));
        }
      }));
    }
    const created = new Date(m.created_at * 1000);
    return element("tr", { className: m.current ? "current" : "" },
      element("td", {}, String(m.id)), element("td", {}, m.model_id),
      element("td", {}, m.parent == null ? "built" : `retrained from ${m.parent}`),
      element("td", {}, element("time", { dateTime: created.toISOString() }, created.toLocaleString())),
      element("td", {}, status));
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  setUpKey();
  setUpTry();
  setUpAdd();
  setUpRetrain();
  showStatus();
  showModels();
});
