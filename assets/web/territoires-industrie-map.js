// Territoires d'industrie: the web map of one release (README, "Web map").
//
// Reads territoires-industrie-map.json (territory cards, legend, zones, file names), the search
// index and, when the downloads panel opens, manifest.json, all published beside this file. Draws
// the PMTiles through the pmtiles protocol, or the regional light GeoJSON when the server does not
// answer HTTP Range requests (python -m http.server). Every text shown comes from those files, so
// from the official lists: it goes into the page with textContent or as text nodes, never as HTML.
// The state is in the URL: #ti-2101, #commune=71076, #carte=<zoom>/<lat>/<lon>.

const doc = document;
const root = doc.documentElement;
const byId = (id) => doc.getElementById(id);
const NUMBER = new Intl.NumberFormat('fr-FR');
const AREA = new Intl.NumberFormat('fr-FR', { maximumFractionDigits: 0 });
const DATE = new Intl.DateTimeFormat('fr-FR', { dateStyle: 'long' });
const DATE_TIME = new Intl.DateTimeFormat('fr-FR', { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' });
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._=-]*$/;        // a published file name, relative to this page
const HTTP_URL = /^https?:\/\/[^\s]+$/i;
const MAX_RESULTS = 12;

// The page's state, also given to tests and to sites embedding the map (read-only use).
const app = {
  config: null, map: null, source: null, territories: new Map(), search: null,
  selected: null, commune: null, hovered: null, downloadsLoaded: false, results: [], active: -1,
  idle() {   // resolves once the map has drawn everything asked so far
    return new Promise((resolve) => { app.map.once('idle', () => resolve()); app.map.triggerRepaint(); });
  },
};
window.territoiresIndustrie = app;

class PageError extends Error {}

// ------------------------------------------------------------------ small helpers
function make(tag, props = {}, children = []) {
  const node = doc.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children);          // strings become text nodes
  return node;
}

function notice(text, kind = 'info') {
  const box = byId('notice');
  box.textContent = text;
  box.dataset.kind = kind;
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  box.hidden = false;
}

function fileUrl(name) {
  if (!SAFE_NAME.test(String(name))) throw new PageError(`nom de fichier refusé : ${name}`);
  return new URL(name, location.href).href;
}

async function getJSON(name) {
  const response = await fetch(fileUrl(name), { credentials: 'same-origin' });
  if (!response.ok) throw new PageError(`${name} : HTTP ${response.status}`);
  return response.json();
}

function count(value, one, many) {
  return value === null || value === undefined ? 'inconnu' : `${NUMBER.format(value)} ${value > 1 ? many : one}`;
}

function bytes(value) {
  if (typeof value !== 'number') return '—';
  if (value < 1024) return `${value} o`;
  if (value < 1024 * 1024) return `${NUMBER.format(Math.round(value / 1024))} Ko`;
  return `${new Intl.NumberFormat('fr-FR', { maximumFractionDigits: 1 }).format(value / 1048576)} Mo`;
}

// Folded text for searching: no accents, no case, punctuation as spaces ("Chalon-sur-Saône" ->
// "chalon sur saone"); "st"/"ste" in a query stand for saint/sainte.
function fold(text) {
  return String(text).normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase()
    .replace(/œ/g, 'oe').replace(/æ/g, 'ae').replace(/[^a-z0-9]+/g, ' ').trim();
}

function foldQuery(text) {
  return fold(text).replace(/\bste\b/g, 'sainte').replace(/\bst\b/g, 'saint');
}

// ------------------------------------------------------------------ where the other phases are
// The root of data_out holds the current phase; every phase also has phase=<phase>/; a release
// folder releases/<build_id>/phase=<phase>/ holds one phase: its switch leads to the latest
// published page of the other phase.
function phaseFolder(target) {
  const path = decodeURIComponent(location.pathname);
  const folder = path.slice(0, path.lastIndexOf('/') + 1);
  let up = '';
  if (/\/releases\/[^/]+\/phase=[^/]+\/$/.test(folder)) up = '../../../';
  else if (/\/phase=[^/]+\/$/.test(folder)) up = '../';
  return `${up}phase=${target}/`;
}

function viewHash() {
  if (app.commune) return `#commune=${app.commune}`;
  if (!app.map) return '';
  const c = app.map.getCenter();
  return `#carte=${app.map.getZoom().toFixed(2)}/${c.lat.toFixed(4)}/${c.lng.toFixed(4)}`;
}

function updatePhaseLinks() {
  for (const link of doc.querySelectorAll('#phases a[data-phase]')) {
    link.href = phaseFolder(link.dataset.phase) + viewHash();
  }
}

// ------------------------------------------------------------------ static parts of the page
function renderHeader(cfg) {
  doc.title = `Territoires d'industrie ${cfg.phase} : carte des ${cfg.territory_count} territoires`;
  byId('phase-label').textContent = cfg.phase;
  byId('count').textContent = `${NUMBER.format(cfg.territory_count)} territoires`;
  const nav = byId('phases');
  nav.replaceChildren(make('span', { class: 'phases-label', text: 'Phase :' }));
  for (const phase of cfg.phases) {
    nav.append(phase === cfg.phase
      ? make('span', { class: 'phase current', 'aria-current': 'page', text: phase })
      : make('a', { class: 'phase', 'data-phase': phase, href: phaseFolder(phase), text: phase }));
  }
}

function renderLegend(cfg) {
  const list = make('ul');
  for (const item of cfg.legend.classes) {
    const swatch = make('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.backgroundColor = item.color;
    list.append(make('li', {}, [swatch, item.label]));
  }
  const narrow = window.matchMedia('(max-width: 700px)').matches;     // folded on a phone
  byId('legend').replaceChildren(make('details', { open: !narrow }, [make('summary', { text: 'Légende' }), list]));
}

function renderZones(cfg) {
  const box = byId('zones');
  box.replaceChildren();
  for (const zone of cfg.zones) {
    const button = make('button', { type: 'button', class: 'button small', 'data-zone': zone.code, text: zone.label });
    button.addEventListener('click', () => app.map && app.map.fitBounds(zone.bounds, { padding: 30, duration: motion() }));
    box.append(button);
  }
}

function motion() {
  return window.matchMedia('(prefers-reduced-motion: reduce)').matches ? 0 : 700;
}

// ------------------------------------------------------------------ libraries and data sources
async function loadMapLibre() {
  const tag = byId('lib-maplibre');
  const lib = await import('maplibre-gl');    // address and SRI hash from the page's import map
  const worker = await fetch(new URL(tag.dataset.worker, location.href).href,
    { integrity: tag.dataset.workerIntegrity, mode: 'cors', credentials: 'omit' });
  if (!worker.ok) throw new PageError(`MapLibre (processus de fond) : HTTP ${worker.status}`);
  const code = new Blob([await worker.text()], { type: 'text/javascript' });
  lib.setWorkerUrl(URL.createObjectURL(code));
  return lib;
}

// Does the server answer HTTP Range requests (206)? A 200 would send the whole archive each time.
async function rangeSupported(url) {
  const abort = new AbortController();
  try {
    const response = await fetch(url, { headers: { Range: 'bytes=0-126' }, signal: abort.signal, cache: 'no-store' });
    if (response.status === 206) {
      await response.arrayBuffer();
      return true;
    }
    abort.abort();
    return false;
  } catch (err) {
    if (err.name === 'AbortError') return false;
    throw err;
  }
}

function indexSearch(raw) {
  if (!raw || raw.format !== 'territoires-industrie-search/1') throw new PageError('index de recherche illisible');
  const entries = [];
  const communes = new Map();      // territory id -> its communes
  const byCode = new Map();        // commune code -> its entries (one per territory)
  for (const [id, name, codes, names] of raw.territories) {
    entries.push({ kind: 'territoire', id, name, key: fold(name) });
    const members = codes.map((code, i) => ({ kind: 'commune', id, code, name: names[i] || code, key: fold(names[i] || ''), territory: name }));
    members.sort((a, b) => a.name.localeCompare(b.name, 'fr'));
    communes.set(id, members);
    for (const entry of members) {
      entries.push(entry);
      if (!byCode.has(entry.code)) byCode.set(entry.code, []);
      byCode.get(entry.code).push(entry);
    }
  }
  return { entries, communes, byCode };
}

// ------------------------------------------------------------------ the map
function fillColor(cfg) {
  const expression = ['match', ['to-string', ['get', cfg.legend.column]]];
  for (const item of cfg.legend.classes) expression.push(item.value, item.color);
  expression.push(cfg.legend.default);
  return expression;
}

function createMap(lib, cfg) {
  const start = cfg.zones.find((z) => z.code === 'metropole') || cfg.zones[0];
  const map = new lib.Map({
    container: 'map',
    style: { version: 8, sources: {}, layers: [{ id: 'fond', type: 'background', paint: { 'background-color': cfg.style.background } }] },
    bounds: start.bounds, fitBoundsOptions: { padding: 20 }, minZoom: 1, maxZoom: 13,
    dragRotate: false, pitchWithRotate: false, touchPitch: false,
    locale: {
      'NavigationControl.ZoomIn': 'Zoom avant', 'NavigationControl.ZoomOut': 'Zoom arrière',
      'AttributionControl.ToggleAttribution': 'Sources', 'Map.Title': 'Carte des territoires d’industrie',
    },
  });
  map.keyboard.disableRotation();
  map.touchZoomRotate.disableRotation();
  map.addControl(new lib.NavigationControl({ showCompass: false }), 'top-right');
  map.addControl(new lib.ScaleControl({ unit: 'metric' }), 'bottom-right');
  map.on('error', (event) => notice(`Erreur de la carte : ${event.error ? event.error.message : 'inconnue'}`, 'error'));
  return map;
}

function addLayers(map, cfg, urls) {
  const tiled = app.source === 'pmtiles';
  map.addSource('ti', tiled ? { type: 'vector', url: `pmtiles://${urls.pmtiles}` }
    : { type: 'geojson', data: urls.fallback, attribution: cfg.attribution });
  const from = tiled ? { source: 'ti', 'source-layer': cfg.layer } : { source: 'ti' };
  const none = ['==', ['get', 'id_ti'], ''];
  map.addLayer({ id: 'ti-fill', type: 'fill', ...from, paint: { 'fill-color': fillColor(cfg), 'fill-opacity': cfg.style.fill_opacity } });
  map.addLayer({ id: 'ti-line', type: 'line', ...from,
    paint: { 'line-color': cfg.style.line, 'line-width': ['interpolate', ['linear'], ['zoom'], 4, 0.4, 10, 1.8] } });
  map.addLayer({ id: 'ti-hover', type: 'line', ...from, filter: none, paint: { 'line-color': cfg.style.hover, 'line-width': 2 } });
  map.addLayer({ id: 'ti-selected', type: 'line', ...from, filter: none, paint: { 'line-color': cfg.style.selected, 'line-width': 3.5 } });
}

function setHover(id, point) {
  const tip = byId('tooltip');
  if (id !== app.hovered) {
    app.hovered = id;
    app.map.setFilter('ti-hover', ['==', ['get', 'id_ti'], id || '']);
  }
  app.map.getCanvas().style.cursor = id ? 'pointer' : '';
  const territory = id && app.territories.get(id);
  if (!territory) {
    tip.hidden = true;
    return;
  }
  tip.textContent = territory.name;
  tip.style.left = `${point.x}px`;
  tip.style.top = `${point.y}px`;
  tip.hidden = false;
}

function wireMap(map) {
  map.on('mousemove', 'ti-fill', (event) => {
    const feature = event.features && event.features[0];
    if (feature) setHover(feature.properties.id_ti, event.point);
  });
  map.on('mouseleave', 'ti-fill', () => setHover(null));
  map.on('click', 'ti-fill', (event) => {
    const feature = event.features && event.features[0];
    if (feature) select(feature.properties.id_ti, { fly: false });
  });
  map.on('moveend', () => {
    if (!app.selected) writeHash();
    updatePhaseLinks();
  });
}

// ------------------------------------------------------------------ the territory card
function select(id, { commune = null, fly = true, focus = false } = {}) {
  const territory = app.territories.get(id);
  if (!territory) {
    notice(`Aucun territoire ${id} dans la phase ${app.config.phase}.`, 'error');
    return false;
  }
  app.selected = id;
  app.commune = commune;
  app.map.setFilter('ti-selected', ['==', ['get', 'id_ti'], id]);
  byId('card').hidden = false;
  app.map.resize();                  // the card takes room from the map
  renderCard(territory, commune);
  if (fly) app.map.fitBounds(territory.bbox, { padding: 40, maxZoom: 9, duration: motion() });
  writeHash();
  if (focus) byId('card-title').focus({ preventScroll: true });
  return true;
}

function closeCard() {
  if (byId('card').hidden) return;
  byId('card').hidden = true;
  app.map.resize();
  app.selected = null;
  app.commune = null;
  app.map.setFilter('ti-selected', ['==', ['get', 'id_ti'], '']);
  writeHash();
}

function describeStatus(territory) {
  const item = app.config.legend.classes.find((c) => c.value === String(territory.is_new));
  return item ? item.label : 'inconnu';
}

function planValue(field, value) {
  if (field.kind === 'boolean') return value ? 'oui' : 'non';
  if (field.kind === 'count') return NUMBER.format(value);
  if (field.kind === 'date') {
    const date = new Date(`${value}T00:00:00Z`);
    return Number.isNaN(date.getTime()) ? String(value) : DATE.format(date);
  }
  if (field.kind === 'url' && HTTP_URL.test(String(value))) {
    return make('a', { href: String(value), rel: 'noopener noreferrer nofollow', target: '_blank', text: String(value) });
  }
  return String(value);
}

function factList(rows) {
  const list = make('dl', { class: 'facts' });
  for (const [term, value] of rows) {
    if (value === null || value === undefined || value === '') continue;
    list.append(make('dt', { text: term }), make('dd', {}, [value]));
  }
  return list;
}

function linkedTerritories(territory) {
  const cfg = app.config;
  const earlier = cfg.phases.filter((p) => p < cfg.phase).sort().reverse()[0];
  if (!territory.ti_2018_2022.length || !earlier) return null;
  const span = make('span');
  territory.ti_2018_2022.forEach((id, i) => {
    if (i) span.append(', ');
    span.append(make('a', { href: `${phaseFolder(earlier)}#${id}`, text: id }));
  });
  return span;
}

function renderCard(territory, commune) {
  const cfg = app.config;
  byId('card-title').textContent = territory.name;
  const regions = territory.regions.map((code) => `${cfg.regions[code] || code} (${code})`).join(', ');
  const body = byId('card-body');
  body.replaceChildren(factList([
    ['Identifiant', territory.id],
    ['Phase', cfg.phase],
    ['Statut', describeStatus(territory)],
    [territory.regions.length > 1 ? 'Régions' : 'Région', regions],
    [territory.departements.length > 1 ? 'Départements' : 'Département', territory.departements.join(', ')],
    ['Communes', count(territory.n_communes, 'commune', 'communes')],
    ['Groupements', count(territory.n_groupements, 'groupement', 'groupements')],
    ['Superficie', territory.area_km2 === null ? 'inconnue' : `${AREA.format(territory.area_km2)} km²`],
    ['Population', territory.population === null ? 'inconnue' : `${NUMBER.format(territory.population)} habitants`],
    ['Territoires 2018-2022 en commun', linkedTerritories(territory)],
  ]));
  const plan = cfg.fields.filter((field) => field.name in territory.plan);
  if (plan.length) {
    body.append(make('h3', { text: "Plan d'action" }),
      factList(plan.map((field) => [field.label, planValue(field, territory.plan[field.name])])));
  }
  body.append(communeList(territory, commune));
  body.append(make('p', { class: 'permalink' }, [make('a', { href: `#${territory.id}`, text: 'Lien vers cette fiche' })]));
  const marked = body.querySelector('li.match');
  if (marked) marked.scrollIntoView({ block: 'nearest' });
}

function communeList(territory, commune) {
  const members = app.search.communes.get(territory.id) || [];
  const list = make('ul', { class: 'communes' });
  for (const member of members) {
    const item = make('li', { class: member.code === commune ? 'match' : null, 'aria-current': member.code === commune ? 'true' : null },
      [member.name, ' ', make('span', { class: 'code', text: member.code })]);
    list.append(item);
  }
  return make('section', { class: 'members', 'aria-label': 'Communes du territoire' },
    [make('h3', { text: `Communes (${NUMBER.format(members.length)})` }), list]);
}

// ------------------------------------------------------------------ search
function find(query) {
  const folded = foldQuery(query);
  if (!folded) return [];
  const raw = query.trim().toUpperCase();
  const code = /^[0-9][0-9AB]?[0-9]{0,3}$/.test(raw) && raw.length >= 2 ? raw : null;
  const idMatch = /^(?:TI[-\s]?)?([0-9]{1,4})$/.exec(raw);
  const found = [];
  for (const entry of app.search.entries) {
    let rank = -1;
    if (entry.kind === 'commune' && code && entry.code.startsWith(code)) rank = entry.code === code ? 0 : 2;
    else if (entry.kind === 'territoire' && idMatch && entry.id.slice(3).startsWith(idMatch[1])) {
      rank = entry.id.slice(3) === idMatch[1] ? 0 : 2;
    }
    if (rank < 0 && entry.key) {
      if (entry.key === folded) rank = 0;
      else if (entry.key.startsWith(folded)) rank = 1;
      else if (entry.key.includes(` ${folded}`)) rank = 3;
    }
    if (rank >= 0) found.push([rank, entry]);
  }
  found.sort((a, b) => a[0] - b[0] || (a[1].kind === b[1].kind ? 0 : a[1].kind === 'territoire' ? -1 : 1)
    || a[1].name.length - b[1].name.length || a[1].name.localeCompare(b[1].name, 'fr'));
  return found.slice(0, MAX_RESULTS).map((pair) => pair[1]);
}

function showResults(results) {
  const list = byId('results');
  const input = byId('q');
  list.replaceChildren();
  input.removeAttribute('aria-activedescendant');
  if (!input.value.trim()) {
    hideResults();
    return;
  }
  results.forEach((entry, i) => {
    const item = make('li', { id: `result-${i}`, role: 'option', class: 'result', 'aria-selected': 'false' }, [
      make('span', { class: 'main', text: entry.kind === 'commune' ? `${entry.name} (${entry.code})` : entry.name }),
      make('span', { class: 'sub', text: entry.kind === 'commune' ? `Commune · ${entry.territory}` : `Territoire ${entry.id}` }),
    ]);
    item.addEventListener('mousedown', (event) => event.preventDefault());   // the input keeps the focus
    item.addEventListener('click', () => pick(entry));
    list.append(item);
  });
  if (!results.length) list.append(make('li', { class: 'empty', role: 'option', 'aria-disabled': 'true', text: 'Aucun résultat' }));
  app.results = results;
  list.hidden = false;
  input.setAttribute('aria-expanded', 'true');
}

function hideResults() {
  byId('results').hidden = true;
  byId('q').setAttribute('aria-expanded', 'false');
  byId('q').removeAttribute('aria-activedescendant');
  app.results = [];
  app.active = -1;
}

function moveActive(step) {
  const items = [...byId('results').querySelectorAll('li.result')];
  if (!items.length) return;
  app.active = (app.active + step + items.length) % items.length;
  items.forEach((item, i) => item.setAttribute('aria-selected', String(i === app.active)));
  byId('q').setAttribute('aria-activedescendant', items[app.active].id);
  items[app.active].scrollIntoView({ block: 'nearest' });
}

function pick(entry) {
  hideResults();
  byId('q').value = entry.kind === 'commune' ? `${entry.name} (${entry.code})` : entry.name;
  select(entry.id, { commune: entry.kind === 'commune' ? entry.code : null, focus: true });
}

function wireSearch() {
  const input = byId('q');
  app.active = -1;
  input.disabled = false;
  input.addEventListener('input', () => {
    app.active = -1;
    showResults(find(input.value));
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      if (byId('results').hidden) showResults(find(input.value));
      moveActive(event.key === 'ArrowDown' ? 1 : -1);
    } else if (event.key === 'Enter') {
      event.preventDefault();
      const results = byId('results').hidden ? find(input.value) : app.results;
      if (results.length) pick(results[Math.max(app.active, 0)]);
    } else if (event.key === 'Escape' && !byId('results').hidden) {
      event.stopPropagation();
      hideResults();
    }
  });
  input.addEventListener('blur', () => hideResults());
  byId('search').addEventListener('submit', (event) => event.preventDefault());
}

// ------------------------------------------------------------------ the URL
function readHash() {
  let text = location.hash.slice(1);
  try {
    text = decodeURIComponent(text);
  } catch {
    return {};
  }
  const state = {};
  for (const part of text.split('&')) {
    let m;
    if ((m = /^(ti-[0-9A-Za-z]{1,12})$/.exec(part))) state.id = m[1];
    else if ((m = /^commune=([0-9][0-9AB][0-9]{3})$/i.exec(part))) state.commune = m[1].toUpperCase();
    else if ((m = /^carte=([0-9]{1,2}(?:\.[0-9]+)?)\/(-?[0-9]{1,2}(?:\.[0-9]+)?)\/(-?[0-9]{1,3}(?:\.[0-9]+)?)$/.exec(part))) {
      state.view = { zoom: Number(m[1]), center: [Number(m[3]), Number(m[2])] };
    }
  }
  return state;
}

function applyHash() {
  const state = readHash();
  if (state.commune) {
    const entries = app.search.byCode.get(state.commune) || [];
    const entry = entries.find((e) => e.id === state.id) || entries[0];
    if (entry) select(entry.id, { commune: entry.code, fly: !state.view });
    else notice(`La commune ${state.commune} n'est dans aucun territoire d'industrie ${app.config.phase}.`);
  } else if (state.id) {
    select(state.id, { fly: !state.view });
  } else {
    closeCard();
  }
  if (state.view) app.map.jumpTo(state.view);
}

function writeHash() {
  let hash;
  if (app.selected && app.commune) {
    const several = (app.search.byCode.get(app.commune) || []).length > 1;
    hash = `#commune=${app.commune}${several ? `&${app.selected}` : ''}`;
  } else if (app.selected) {
    hash = `#${app.selected}`;
  } else {
    hash = viewHash();
  }
  if (hash !== location.hash) history.replaceState(null, '', hash);
  updatePhaseLinks();
}

// ------------------------------------------------------------------ the downloads panel
function fileRow(name, format, size, sha256) {
  return make('tr', {}, [
    make('td', {}, [make('a', { href: name, text: name })]),
    make('td', { text: format || '' }),
    make('td', { class: 'num', text: size }),
    make('td', {}, [make('code', { class: 'hash', text: sha256 || '—' })]),
  ]);
}

function sourceItem(input) {
  const parts = [input.title || input.source || '?'];
  const release = [input.release, input.cog ? `COG ${input.cog}` : null].filter(Boolean).join(', ');
  if (release) parts.push(` (${release})`);
  if (input.licence) parts.push(` : ${input.licence}`);
  if (HTTP_URL.test(String(input.origin || ''))) {
    parts.push(' — ', make('a', { href: String(input.origin), rel: 'noopener noreferrer', text: 'adresse' }));
  }
  return make('li', {}, parts);
}

function renderDownloads(manifest) {
  const cfg = app.config;
  const built = new Date(manifest.built_at);
  const rows = [];
  for (const output of manifest.outputs || []) {
    const name = String(output.path || '').split('/').pop();
    if (SAFE_NAME.test(name)) rows.push(fileRow(name, output.format, bytes(output.bytes), output.sha256));
  }
  rows.push(fileRow(cfg.files.manifest, 'JSON : le manifeste de cette version (ce tableau)', '—', null));
  rows.push(fileRow(cfg.files.changes, 'Markdown : les changements depuis la version précédente', '—', null));
  const table = make('table', { class: 'files' }, [
    make('caption', { text: `${rows.length} fichiers publiés` }),
    make('thead', {}, [make('tr', {}, ['Fichier', 'Format', 'Taille', 'SHA-256'].map((h) => make('th', { scope: 'col', text: h })))]),
    make('tbody', {}, rows),
  ]);
  byId('downloads-body').replaceChildren(
    make('p', {}, ['Version ', make('code', { text: manifest.build_id }),
      Number.isNaN(built.getTime()) ? '' : `, publiée le ${DATE_TIME.format(built)} UTC`,
      ` (phase ${manifest.phase}, contrat ${manifest.contract_version}).`]),
    table,
    make('h3', { text: 'Licence' }),
    make('p', {}, ['Données publiées sous ', make('a', { href: cfg.licence.url, rel: 'noopener noreferrer', text: cfg.licence.name }),
      '. Listes officielles : ', make('a', { href: cfg.dataset.url, rel: 'noopener noreferrer', text: cfg.dataset.title }), '.']),
    make('h3', { text: 'Sources' }),
    make('ul', { class: 'sources' }, (manifest.inputs || []).map(sourceItem)),
    make('p', { class: 'attribution', text: cfg.attribution }),
  );
}

async function openDownloads() {
  const panel = byId('downloads');
  panel.hidden = false;
  byId('open-downloads').setAttribute('aria-expanded', 'true');
  byId('downloads-title').focus();
  if (app.downloadsLoaded) return;
  app.downloadsLoaded = true;
  try {
    renderDownloads(await getJSON(app.config.files.manifest));
  } catch (err) {
    app.downloadsLoaded = false;
    byId('downloads-body').replaceChildren(make('p', { text: `Le manifeste est illisible : ${err.message}` }));
  }
}

function closeDownloads() {
  byId('downloads').hidden = true;
  byId('open-downloads').setAttribute('aria-expanded', 'false');
  byId('open-downloads').focus();
}

function wirePanels() {
  byId('close-card').addEventListener('click', closeCard);
  byId('open-downloads').addEventListener('click', () => (byId('downloads').hidden ? openDownloads() : closeDownloads()));
  byId('close-downloads').addEventListener('click', closeDownloads);
  doc.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape') return;
    if (!byId('downloads').hidden) closeDownloads();
    else if (!byId('card').hidden) {
      closeCard();
      byId('q').focus();
    }
  });
}

// ------------------------------------------------------------------ start
async function main() {
  root.dataset.state = 'loading';
  byId('notice').hidden = true;      // the page's own message for when this script cannot run (file://)
  if (location.protocol === 'file:') {
    throw new PageError('Cette carte doit être servie par un serveur web : dans ce dossier, lancez '
      + '« python3 -m http.server » puis ouvrez http://localhost:8000/.');
  }
  const cfg = await getJSON(doc.body.dataset.config);
  if (cfg.format !== 'territoires-industrie-map/1') throw new PageError('données de la carte illisibles');
  app.config = cfg;
  for (const territory of cfg.territories) app.territories.set(territory.id, territory);
  renderHeader(cfg);
  renderLegend(cfg);
  renderZones(cfg);
  wirePanels();
  const urls = { pmtiles: fileUrl(cfg.files.pmtiles), fallback: fileUrl(cfg.files.fallback) };
  const [lib, ranged, search] = await Promise.all([loadMapLibre(), rangeSupported(urls.pmtiles), getJSON(cfg.files.search)]);
  app.search = indexSearch(search);
  app.source = ranged ? 'pmtiles' : 'geojson';
  root.dataset.source = app.source;
  if (!ranged) {
    const step = cfg.fallback_simplification_m ? ` (simplifiée à ${NUMBER.format(cfg.fallback_simplification_m)} m)` : '';
    notice(`Ce serveur ne répond pas aux requêtes HTTP Range (« python -m http.server » par exemple) : la carte affiche `
      + `la version allégée ${cfg.files.fallback}${step} au lieu des tuiles ${cfg.files.pmtiles}.`);
  } else {
    const protocol = new window.pmtiles.Protocol({ metadata: true });
    lib.addProtocol('pmtiles', protocol.tile);
  }
  let map;
  try {
    map = app.map = createMap(lib, cfg);
  } catch (err) {
    throw new PageError(`la carte ne peut pas s'afficher dans ce navigateur (WebGL indisponible ?) : ${err.message}`);
  }
  await new Promise((resolve) => map.once('load', resolve));
  addLayers(map, cfg, urls);
  wireMap(map);
  wireSearch();
  applyHash();
  window.addEventListener('hashchange', applyHash);
  await app.idle();
  root.dataset.state = 'ready';
}

main().catch((err) => {
  root.dataset.state = 'error';
  notice(err instanceof PageError ? err.message : `La carte n'a pas pu démarrer : ${err.message}`, 'error');
});
