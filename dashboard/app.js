/* mmme live dashboard: subscribes to mmme/v1/+/# over MQTT-over-WebSockets, validates
 * every payload against its JSON Schema (schemas/<kind>.schema.json), deduplicates on
 * msg_id, keeps bounded per-rig histories and renders at most once per animation frame.
 *
 * Query parameters (all optional): url (ws:// or wss:// broker), username (or user),
 * password, connect=0|1 (default 1 when url is given), rig=<rig_id> (open its view),
 * window=<seconds> (plot window), schemas=<base path of the schema files>.
 *
 * window.mmmeDashboard exposes read-only state and the in-browser timings for tests. */
'use strict';

(function () {
  const PREFIX = 'mmme/v1';
  const KINDS = ['status', 'events/me', 'events/emotion', 'vitals', 'markers', 'health',
    'ack', 'cmd'];
  const LIMITS = {
    vitals: 1800, // points per rig (30 min at 1 Hz)
    events: 400, // markers, expressions, emotions, status changes per rig
    eventsDom: 150, // of which shown in the list
    cmds: 12, // commands shown per rig
    errors: 100, // distinct unreadable-payload entries
    seen: 50000, // msg_ids remembered for deduplication
    payloadBytes: 256 * 1024,
  };
  const STALE_MS = 10000; // online but silent this long: marked stale
  const ACK_TIMEOUT_MS = 10000;
  const STORE = 'mmme-dashboard.';
  const BAND_ORDER = ['delta', 'theta', 'alpha', 'beta', 'gamma'];
  const BAND_COLORS = ['#a78bfa', '#60a5fa', '#34d399', '#fbbf24', '#f87171', '#f472b6',
    '#94a3b8'];
  const EMO_COLORS = { negative: '#ef476f', positive: '#06d6a0', surprise: '#4cc9f0' };
  const ME_COLORS = { micro: '#ffd166', macro: '#f78c6b' };

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  // ---------------------------------------------------------------- small DOM helpers
  function el(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) node.textContent = text;
  }
  function setData(node, key, value) {
    value = String(value);
    if (node.dataset[key] !== value) node.dataset[key] = value;
  }
  function pad(n, w) { return String(n).padStart(w || 2, '0'); }
  function clock(ms) {
    if (!isFinite(ms) || ms <= 0) return '–';
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
      pad(d.getMilliseconds(), 3);
  }
  function ago(ms) {
    if (!ms) return 'never';
    const s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 1.5) return 'just now';
    if (s < 90) return `${s.toFixed(0)} s ago`;
    if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
    return `${(s / 3600).toFixed(1)} h ago`;
  }
  function num(v, digits, unit) {
    if (typeof v !== 'number' || !isFinite(v)) return '–';
    return v.toFixed(digits) + (unit ? ' ' + unit : '');
  }
  function hex(n) {
    const b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }
  function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n) + '…' : s; }

  // ---------------------------------------------------------------- state
  const rigs = new Map(); // rig_id -> rig record (see newRig)
  const errors = new Map(); // topic|reason -> {rig, topic, reason, sample, count, first, last}
  const validators = {};
  let schemaProblem = '';
  let client = null;
  const conn = { state: 'disconnected', detail: '', url: '' };
  let selected = null; // rig id of the rig view, or null for the fleet view
  let cmdCounter = 0;

  const seenIds = new Set();
  const seenRing = new Array(LIMITS.seen);
  let seenHead = 0;
  function firstTime(msgId) {
    if (seenIds.has(msgId)) return false;
    const old = seenRing[seenHead];
    if (old !== undefined) seenIds.delete(old);
    seenRing[seenHead] = msgId;
    seenHead = (seenHead + 1) % LIMITS.seen;
    seenIds.add(msgId);
    return true;
  }

  const stats = {};
  function resetStats() {
    Object.assign(stats, {
      messages: 0, applied: 0, duplicates: 0, unreadable: 0,
      handleMsSum: 0, handleMsMax: 0,
      frames: 0, frameMsSum: 0, frameMsMax: 0,
      updates: 0, updateMsSum: 0, updateMsMax: 0,
      since: performance.now(),
    });
  }
  resetStats();
  const arrivals = []; // performance.now() of messages applied since the last frame

  function newRig(id) {
    return {
      id, status: null, online: null, reason: '', recording: null,
      lastSeen: 0, lastKind: '', lastWall: 0, lastWallPerf: 0,
      health: null, healthAt: 0, vitals: [], bands: [], events: [], pendingEvents: [],
      cmds: new Map(), unreadable: 0, fleetDirty: true, viewDirty: true, healthVersion: 0,
      card: null,
    };
  }
  function getRig(id) {
    let r = rigs.get(id);
    if (!r) { r = newRig(id); rigs.set(id, r); fleetOrderDirty = true; }
    return r;
  }
  /** The rig's wall clock now, extrapolated from its last message (plots' right edge). */
  function rigNow(rig) {
    return rig && rig.lastWall ? rig.lastWall + (performance.now() - rig.lastWallPerf)
      : Date.now();
  }
  /** Wall time of a rig monotonic instant, using the message's own (t_ns, wall_time). */
  function wallOf(doc, tNs) {
    const wall = Date.parse(doc.wall_time);
    if (!isFinite(wall)) return Date.now();
    if (typeof tNs !== 'number' || typeof doc.t_ns !== 'number') return wall;
    return wall - (doc.t_ns - tNs) / 1e6;
  }

  // ---------------------------------------------------------------- schemas
  async function loadSchemas() {
    const base = (params.get('schemas') || 'schemas').replace(/\/$/, '');
    const Ajv = window.ajv2020 && (window.ajv2020.default || window.ajv2020);
    if (typeof Ajv !== 'function') {
      schemaProblem = 'the JSON Schema validator (vendor/ajv2020.min.js) did not load';
      return;
    }
    const ajv = new Ajv({ allErrors: true, strict: false });
    const problems = [];
    await Promise.all(KINDS.map(async (kind) => {
      const url = `${base}/${kind.replace('/', '_')}.schema.json`;
      try {
        const res = await fetch(url, { cache: 'no-cache' });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        validators[kind] = ajv.compile(await res.json());
      } catch (e) {
        problems.push(`${url}: ${e.message}`);
      }
    }));
    if (problems.length) {
      schemaProblem = 'cannot load message schemas, payloads of these kinds are shown ' +
        'unvalidated: ' + problems.join('; ');
    }
  }
  function schemaErrors(errs) {
    const lines = (errs || []).map((e) => {
      let s = `${e.instancePath || '(root)'} ${e.message}`;
      const p = e.params || {};
      if (p.additionalProperty) s += ` (${p.additionalProperty})`;
      if (p.allowedValues) s += `: ${p.allowedValues.join(', ')}`;
      if (p.allowedValue !== undefined) s += `: ${JSON.stringify(p.allowedValue)}`;
      return s;
    }).filter((s) => !/must match "then" schema/.test(s));
    const shown = lines.slice(0, 3).join('; ');
    return lines.length > 3 ? `${shown}; +${lines.length - 3} more` : shown;
  }

  // ---------------------------------------------------------------- unreadable payloads
  function unreadable(rigId, topic, reason, sample) {
    stats.unreadable++;
    const key = topic + '|' + reason;
    let e = errors.get(key);
    if (!e) {
      if (errors.size >= LIMITS.errors) errors.delete(errors.keys().next().value);
      e = { rig: rigId, topic, reason, sample: '', count: 0, first: Date.now(), last: 0 };
      errors.set(key, e);
    }
    e.count++;
    e.last = Date.now();
    e.sample = clip(sample === undefined ? '' : sample, 160);
    if (rigId && rigs.has(rigId)) { const r = rigs.get(rigId); r.unreadable++; r.fleetDirty = true; }
    errorsDirty = true;
    schedule();
  }
  function sampleOf(bytes) {
    const n = Math.min(bytes.length, 48);
    let out = '';
    for (let i = 0; i < n; i++) out += bytes[i].toString(16).padStart(2, '0') + ' ';
    return 'bytes: ' + out.trim() + (bytes.length > n ? ' …' : '');
  }

  // ---------------------------------------------------------------- message path
  const decoder = new TextDecoder('utf-8', { fatal: true });

  function onMessage(topic, payload, packet) {
    const t0 = performance.now();
    stats.messages++;
    try {
      handle(topic, payload, packet, t0);
    } catch (e) { // a bug or a surprise in one payload must not stop the rest
      unreadable(topic.split('/')[2] || null, topic, 'dashboard could not show it: ' +
        (e && e.message), '');
    }
    const dt = performance.now() - t0;
    stats.handleMsSum += dt;
    if (dt > stats.handleMsMax) stats.handleMsMax = dt;
  }

  function handle(topic, payload, packet, t0) {
    const parts = topic.split('/');
    if (parts.length < 4 || parts[0] !== 'mmme' || parts[1] !== 'v1' || !parts[2]) {
      unreadable(null, topic, 'topic is not mmme/v1/<rig_id>/<kind>', '');
      return;
    }
    const rigId = parts[2];
    const kind = parts.slice(3).join('/');
    if (!KINDS.includes(kind)) {
      unreadable(rigId, topic, `unknown message kind "${kind}"`, '');
      return;
    }
    const retained = !!(packet && packet.retain);
    if (payload.length === 0) {
      if (kind === 'status' && rigs.has(rigId)) { // retained status cleared: rig retired
        removeRig(rigId);
      }
      return;
    }
    if (payload.length > LIMITS.payloadBytes) {
      unreadable(rigId, topic, `payload of ${payload.length} bytes is too large`, '');
      return;
    }
    let text;
    try { text = decoder.decode(payload); } catch (e) {
      unreadable(rigId, topic, 'payload is not UTF-8 text', sampleOf(payload));
      return;
    }
    let doc;
    try { doc = JSON.parse(text); } catch (e) {
      unreadable(rigId, topic, 'payload is not JSON: ' + e.message, text);
      return;
    }
    const validate = validators[kind];
    if (validate && !validate(doc)) {
      unreadable(rigId, topic, 'does not match ' + kind.replace('/', '_') + '.schema.json: ' +
        schemaErrors(validate.errors), text);
      return;
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      unreadable(rigId, topic, 'payload is not a JSON object', text);
      return;
    }
    if (kind !== 'cmd') {
      if (doc.rig_id !== rigId) {
        unreadable(rigId, topic, `rig_id "${clip(doc.rig_id, 40)}" does not match the topic`,
          text);
        return;
      }
      if (typeof doc.msg_id !== 'string' || !doc.msg_id) {
        unreadable(rigId, topic, 'payload has no msg_id', text);
        return;
      }
      if (!firstTime(doc.msg_id)) { stats.duplicates++; return; }
    }
    const rig = getRig(rigId);
    apply(rig, kind, doc, retained);
    stats.applied++;
    arrivals.push(t0);
    schedule();
  }

  function apply(rig, kind, doc, retained) {
    if (kind !== 'cmd') {
      const wall = Date.parse(doc.wall_time);
      if (!retained || !rig.lastSeen) {
        rig.lastSeen = retained && isFinite(wall) ? wall : Date.now();
        rig.lastKind = kind;
      }
      if (!retained && isFinite(wall)) { rig.lastWall = wall; rig.lastWallPerf = performance.now(); }
    }
    rig.fleetDirty = true;
    rig.viewDirty = true;
    switch (kind) {
      case 'status': {
        const was = rig.online;
        rig.status = doc;
        rig.online = doc.state === 'online';
        rig.reason = doc.reason || '';
        if (typeof doc.recording === 'boolean') rig.recording = doc.recording;
        if (was !== rig.online) {
          addEvent(rig, {
            type: 'status', t: wallOf(doc), lane: null,
            text: doc.state + (doc.reason ? ` (${doc.reason})` : '') + (retained ? ' · retained' : ''),
          });
        }
        break;
      }
      case 'health':
        rig.health = doc;
        rig.healthAt = Date.now();
        rig.healthVersion++;
        if (typeof doc.recorder === 'string') rig.recorder = doc.recorder;
        break;
      case 'vitals': addVitals(rig, doc); break;
      case 'markers':
        addEvent(rig, { type: 'marker', t: wallOf(doc, doc.marker_t_ns), lane: 'marker',
          color: '#e2e8f0', label: String(doc.code), code: doc.code, msgId: doc.msg_id });
        break;
      case 'events/me': {
        const iv = doc.interval || {};
        addEvent(rig, { type: 'me', t: wallOf(doc, iv.apex_ns), lane: 'me', doc,
          color: ME_COLORS[doc.kind] || '#ffd166', label: doc.kind === 'micro' ? 'ME' : 'mac',
          msgId: doc.msg_id });
        break;
      }
      case 'events/emotion': {
        const iv = doc.interval || {};
        const t = iv.apex_ns !== undefined ? wallOf(doc, iv.apex_ns)
          : wallOf(doc, (doc.window || {}).t0_ns);
        addEvent(rig, { type: 'emotion', t, lane: 'emotion', doc,
          color: EMO_COLORS[doc.predicted] || '#cbd5e1', label: doc.predicted, msgId: doc.msg_id });
        break;
      }
      case 'cmd': {
        if (!rig.cmds.has(doc.cmd_id)) {
          addCmd(rig, { cmd_id: doc.cmd_id, cmd: doc.cmd, mine: false, state: 'pending',
            sentAt: Date.now(), ack: null });
        }
        break;
      }
      case 'ack': {
        let c = doc.cmd_id !== null ? rig.cmds.get(doc.cmd_id) : null;
        if (!c) {
          c = { cmd_id: doc.cmd_id, cmd: doc.cmd, mine: false, state: 'pending',
            sentAt: Date.now(), ack: null };
          addCmd(rig, c);
        }
        c.ack = doc;
        c.state = doc.ok ? 'ok' : 'error';
        c.ackAt = Date.now();
        if (doc.ok && doc.result && typeof doc.result.recording === 'boolean') {
          rig.recording = doc.result.recording;
        }
        break;
      }
      default: break;
    }
  }

  function addVitals(rig, doc) {
    const valid = doc.valid || {};
    const val = (key) => (valid[key] === false ? null : doc[key]);
    const p = { t: Date.parse(doc.wall_time), hr: val('hr_bpm'), rr: val('rr_bpm'),
      eda: val('eda_us'), skt: val('skt_c') };
    if (!isFinite(p.t)) p.t = Date.now();
    const bands = doc.eeg_bands || {};
    let total = 0;
    for (const k in bands) if (typeof bands[k] === 'number' && bands[k] > 0) total += bands[k];
    for (const k in bands) {
      if (!rig.bands.includes(k)) {
        rig.bands.push(k);
        rig.bands.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
      }
      const v = bands[k];
      p['eeg.' + k] = typeof v === 'number' && total > 0 ? (100 * v) / total : null;
    }
    const arr = rig.vitals;
    if (arr.length && p.t < arr[arr.length - 1].t) { // late arrival: keep time order
      let i = arr.length;
      while (i > 0 && arr[i - 1].t > p.t) i--;
      arr.splice(i, 0, p);
    } else {
      arr.push(p);
    }
    if (arr.length > LIMITS.vitals * 1.1) arr.splice(0, arr.length - LIMITS.vitals);
    rig.lastVitals = doc;
    rig.plotsDirty = true;
  }
  function rank(band) { const i = BAND_ORDER.indexOf(band); return i < 0 ? 99 : i; }

  function addEvent(rig, ev) {
    ev.seq = ++eventSeq;
    rig.events.push(ev);
    if (rig.events.length > LIMITS.events * 1.1) rig.events.splice(0, rig.events.length - LIMITS.events);
    rig.pendingEvents.push(ev);
    if (rig.pendingEvents.length > LIMITS.eventsDom) rig.pendingEvents.splice(0, rig.pendingEvents.length - LIMITS.eventsDom);
    rig.plotsDirty = true;
  }
  let eventSeq = 0;

  function addCmd(rig, c) {
    rig.cmds.set(c.cmd_id, c);
    while (rig.cmds.size > LIMITS.cmds) rig.cmds.delete(rig.cmds.keys().next().value);
  }

  function removeRig(id) {
    const rig = rigs.get(id);
    if (rig && rig.card) rig.card.root.remove();
    rigs.delete(id);
    fleetOrderDirty = true;
    schedule();
  }

  // ---------------------------------------------------------------- commands
  function sendCommand(rigId, cmd, args) {
    const rig = getRig(rigId);
    const body = { cmd_id: `dash-${hex(4)}-${++cmdCounter}`, cmd, args: args || {} };
    const c = { cmd_id: body.cmd_id, cmd, mine: true, state: 'pending', sentAt: Date.now(), ack: null };
    if (validators.cmd && !validators.cmd(body)) {
      c.state = 'error';
      c.note = 'not sent: ' + schemaErrors(validators.cmd.errors);
    } else if (!client || !client.connected) {
      c.state = 'error';
      c.note = 'not sent: not connected to the broker';
    } else {
      client.publish(`${PREFIX}/${rigId}/cmd`, JSON.stringify(body), { qos: 1 }, (err) => {
        if (err) { c.state = 'error'; c.note = 'publish failed: ' + err.message; }
        else if (c.state === 'pending') c.note = 'delivered to the broker, waiting for the ack';
        rig.viewDirty = true;
        schedule();
      });
      c.note = 'sent, waiting for the ack';
    }
    addCmd(rig, c);
    rig.viewDirty = true;
    schedule();
    return body.cmd_id;
  }

  // ---------------------------------------------------------------- connection
  function setConn(state, detail) {
    conn.state = state;
    conn.detail = detail || '';
    connDirty = true;
    for (const r of rigs.values()) r.viewDirty = true; // buttons depend on it
    schedule();
  }

  function connect(url, username, password) {
    disconnect();
    if (!/^wss?:\/\//i.test(url)) {
      setConn('error', 'the broker URL must start with ws:// or wss://');
      return;
    }
    if (typeof window.mqtt === 'undefined') {
      setConn('error', 'the MQTT library (vendor/mqtt.min.js) did not load');
      return;
    }
    try { localStorage.setItem(STORE + 'url', url); localStorage.setItem(STORE + 'username', username || ''); } catch (e) { /* private mode */ }
    const opts = {
      clientId: 'mmme-dash-' + hex(6), clean: true, keepalive: 30, protocolVersion: 4,
      reconnectPeriod: 2000, connectTimeout: 8000, resubscribe: false,
    };
    if (username) opts.username = username;
    if (password) opts.password = password;
    conn.url = url;
    let c;
    try { c = window.mqtt.connect(url, opts); } catch (e) {
      setConn('error', e.message);
      return;
    }
    client = c;
    setConn('connecting', url);
    c.on('connect', () => {
      if (client !== c) return;
      setConn('connected', url);
      c.subscribe(PREFIX + '/+/#', { qos: 1 }, (err, granted) => {
        if (err) setConn('error', 'subscribe failed: ' + err.message);
        else if (granted && granted[0] && granted[0].qos === 128) setConn('error', 'subscription refused by the broker (ACL?)');
      });
    });
    c.on('reconnect', () => { if (client === c) setConn('reconnecting', url); });
    c.on('offline', () => { if (client === c && conn.state !== 'error') setConn('reconnecting', url); });
    c.on('error', (e) => {
      if (client !== c) return;
      const msg = e && e.message ? e.message : String(e);
      // Refused logins (MQTT 3.1.1 return codes 4, 5; MQTT 5 reasons 134, 135) won't get
      // better by retrying: stop, and say so.
      if (e && [4, 5, 134, 135].includes(e.code)) {
        client = null;
        try { c.end(true); } catch (x) { /* closed */ }
        setConn('error', `login refused by ${url}: ${msg}`);
        return;
      }
      setConn('error', msg);
    });
    c.on('message', (topic, payload, packet) => { if (client === c) onMessage(topic, payload, packet); });
  }

  function disconnect() {
    if (client) {
      const c = client;
      client = null;
      try { c.end(true); } catch (e) { /* already closed */ }
    }
    setConn('disconnected', '');
  }

  // ---------------------------------------------------------------- rendering
  let framePending = false;
  let connDirty = true, errorsDirty = true, fleetOrderDirty = true, viewSwitched = true;

  function schedule() {
    if (framePending) return;
    framePending = true;
    if (document.hidden) setTimeout(flush, 100); // no animation frames in a hidden tab
    else requestAnimationFrame(flush);
  }

  function flush() {
    framePending = false;
    const t0 = performance.now();
    try {
      render();
    } catch (e) {
      console.error('dashboard render failed', e);
    }
    const t1 = performance.now();
    const frame = t1 - t0;
    stats.frames++;
    stats.frameMsSum += frame;
    if (frame > stats.frameMsMax) stats.frameMsMax = frame;
    for (let i = 0; i < arrivals.length; i++) {
      const lat = t1 - arrivals[i];
      stats.updates++;
      stats.updateMsSum += lat;
      if (lat > stats.updateMsMax) stats.updateMsMax = lat;
    }
    arrivals.length = 0;
  }

  function render() {
    if (connDirty) { renderConn(); connDirty = false; }
    if (errorsDirty) { renderErrors(); errorsDirty = false; }
    if (selected === null) renderFleet();
    else renderRigView();
  }

  const CONN_TEXT = {
    disconnected: 'not connected', connecting: 'connecting to', connected: 'connected to',
    reconnecting: 'reconnecting to', error: 'error:',
  };
  function renderConn() {
    const n = $('conn-state');
    setData(n, 'state', conn.state);
    setText(n, `${CONN_TEXT[conn.state] || conn.state} ${conn.detail}`.trim());
    setText($('conn-button'), client ? 'Disconnect' : 'Connect');
  }

  function renderErrors() {
    const box = $('errors');
    const list = $('errors-list');
    const items = [];
    if (schemaProblem) items.push({ rig: '', topic: '', reason: schemaProblem, count: 1, last: 0, sample: '' });
    for (const e of errors.values()) items.push(e);
    box.hidden = items.length === 0;
    const total = items.reduce((a, e) => a + e.count, 0);
    setText($('errors-title'), `${total} unreadable payload${total === 1 ? '' : 's'}`);
    list.replaceChildren();
    for (const e of items.slice(-30).reverse()) {
      const li = el('li', 'error');
      li.dataset.rig = e.rig || '';
      li.dataset.topic = e.topic;
      li.append(el('span', 'when', e.last ? clock(e.last) : ''));
      if (e.rig) li.append(el('span', 'rig', e.rig));
      if (e.topic) li.append(el('code', 'topic', e.topic));
      li.append(el('span', 'reason', e.reason));
      if (e.count > 1) li.append(el('span', 'count', `×${e.count}`));
      if (e.sample) li.append(el('code', 'sample', e.sample));
      list.append(li);
    }
  }

  // -- fleet view
  function renderFleet() {
    const fleet = $('fleet');
    if (fleetOrderDirty) {
      const ids = Array.from(rigs.keys()).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      const nodes = ids.map((id) => { const r = rigs.get(id); if (!r.card) r.card = buildCard(r); return r.card.root; });
      fleet.replaceChildren(...nodes);
      fleetOrderDirty = false;
      $('fleet-empty').hidden = ids.length > 0;
      const online = ids.filter((id) => rigs.get(id).online).length;
      setText($('fleet-count'), ids.length ? `${online} online of ${ids.length}` : '');
    }
    let online = 0;
    for (const rig of rigs.values()) {
      if (rig.online) online++;
      if (!rig.card) continue;
      updateCardTimes(rig);
      if (rig.fleetDirty) { updateCard(rig); rig.fleetDirty = false; }
    }
    if (rigs.size) setText($('fleet-count'), `${online} online of ${rigs.size}`);
  }

  function buildCard(rig) {
    const root = el('article', 'card');
    root.dataset.rig = rig.id;
    root.tabIndex = 0;
    root.title = 'open ' + rig.id;
    const head = el('header');
    const state = el('span', 'badge state');
    const rec = el('span', 'badge rec');
    head.append(el('h3', null, rig.id), state, rec);
    const kv = el('dl', 'kv');
    const field = (label) => { const dd = el('dd'); kv.append(el('dt', null, label), dd); return dd; };
    const c = { root, state, rec, sw: field('software'), model: field('model'),
      cfg: field('config'), seen: field('last seen'), host: field('host') };
    c.reason = el('p', 'reason');
    c.streams = el('div', 'streams');
    c.bad = el('p', 'bad-count');
    root.append(head, kv, c.streams, c.reason, c.bad);
    const open = () => { location.hash = '#/rig/' + encodeURIComponent(rig.id); };
    root.addEventListener('click', open);
    root.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
    c.healthVersion = -1;
    return c;
  }

  function stateOf(rig) {
    if (rig.online === null) return 'unknown';
    return rig.online ? 'online' : 'offline';
  }
  function isStale(rig) {
    return rig.online === true && rig.lastSeen && Date.now() - rig.lastSeen > STALE_MS;
  }

  function updateCardTimes(rig) {
    const c = rig.card;
    setText(c.seen, rig.lastSeen ? `${ago(rig.lastSeen)} (${rig.lastKind})` : 'never');
    setData(c.root, 'stale', isStale(rig) ? '1' : '0');
  }

  function updateCard(rig) {
    const c = rig.card;
    const s = rig.status || {};
    const st = stateOf(rig);
    setData(c.root, 'state', st);
    setText(c.state, isStale(rig) ? 'online · silent' : st);
    setData(c.state, 'state', st);
    setData(c.root, 'recording', rig.recording === true ? '1' : '0');
    setText(c.rec, rig.recording === true ? '● REC' : rig.recording === false ? 'idle' : '');
    setData(c.rec, 'on', rig.recording === true ? '1' : '0');
    setText(c.sw, s.software_version || '–');
    setText(c.model, s.model_version || '–');
    setText(c.cfg, s.config_hash || '–');
    setText(c.host, hostLine(rig.health));
    setText(c.reason, !rig.online && rig.reason ? `offline: ${rig.reason}` : '');
    setText(c.bad, rig.unreadable ? `${rig.unreadable} unreadable payload(s)` : '');
    if (c.healthVersion !== rig.healthVersion) {
      c.streams.replaceChildren(streamsTable(rig.health, s.streams));
      c.healthVersion = rig.healthVersion;
    }
  }

  function hostLine(h) {
    if (!h) return 'no health yet';
    const parts = [`cpu ${num(h.cpu_percent, 0, '%')}`];
    if (typeof h.temperature_c === 'number') parts.push(num(h.temperature_c, 0, '°C'));
    if (typeof h.disk_free_mb === 'number') parts.push(`disk ${num(h.disk_free_mb / 1024, 1, 'GB')}`);
    if (typeof h.outbox_backlog === 'number') parts.push(`outbox ${h.outbox_backlog}`);
    if (typeof h.recorder === 'string') parts.push(h.recorder);
    // A runtime stage that keeps failing (the rest of the rig runs on): name, count, why.
    for (const [name, f] of Object.entries(h.sinks || {})) {
      if (!f || !f.failures) continue;
      const why = String(f.last_error || '').slice(0, 80);
      parts.push(`${name} failed ${f.failures}×${why ? ` (${why})` : ''}`);
    }
    const o = h.offload;
    if (o && typeof o.queued === 'number') {
      // recordings home: what the study server has not yet confirmed
      const left = num(o.bytes_left / 2 ** 30, 2, 'GB');
      parts.push(o.queued ? `home: ${o.queued} queued, ${left} left${o.sending ? ` (sending ${o.sending})` : ''}`
        : `home: all ${o.verified} verified`);
      // the offloader rewrites its state every 30 s (10 s while sending): far older, it is not running
      if (typeof o.age_s === 'number' && o.age_s > 120) parts.push(`offloader silent ${num(o.age_s / 60, 0, 'min')}`);
    }
    return parts.join(' · ');
  }

  function streamsTable(h, declared) {
    const t = el('table', 'streams');
    const head = el('tr');
    for (const x of ['stream', 'rate', 'drops', 'sync ±']) head.append(el('th', null, x));
    t.append(el('thead')); t.tHead.append(head);
    const body = el('tbody');
    const streams = (h && h.streams) || {};
    const names = Object.keys(streams);
    for (const n of declared || []) if (!names.includes(n)) names.push(n);
    for (const name of names) {
      const s = streams[name];
      const tr = el('tr');
      tr.dataset.stream = name;
      if (!s) {
        tr.className = 'missing';
        tr.append(el('td', null, name), el('td', null, 'no health'), el('td'), el('td'));
      } else {
        if (s.flowing === false) tr.className = 'bad';
        else if (s.dropped > 0) tr.className = 'warn';
        const unit = name === 'camera' ? 'fps' : 'Hz';
        tr.append(el('td', null, name), el('td', 'n', num(s.rate_hz, s.rate_hz < 10 ? 1 : 0, unit)),
          el('td', 'n', String(s.dropped)),
          el('td', 'n', num(s.sync_uncertainty_ms, 2, 'ms')));
      }
      body.append(tr);
    }
    if (!names.length) { const tr = el('tr'); const td = el('td', 'muted', 'no streams reported'); td.colSpan = 4; tr.append(td); body.append(tr); }
    t.append(body);
    return t;
  }

  // -- rig view
  const Plot = window.MmmePlot.Plot;
  const plots = {
    hr: new Plot($('plot-hr'), { title: 'Heart rate', unit: 'bpm', minSpan: 6,
      series: [{ key: 'hr', label: 'HR', color: '#ff6b6b' }] }),
    rr: new Plot($('plot-rr'), { title: 'Respiration', unit: 'breaths/min', minSpan: 3,
      series: [{ key: 'rr', label: 'RR', color: '#4cc9f0' }] }),
    eda: new Plot($('plot-eda'), { title: 'EDA', unit: 'µS', minSpan: 0.3,
      series: [{ key: 'eda', label: 'EDA', color: '#f9c74f' }] }),
    skt: new Plot($('plot-skt'), { title: 'Skin temperature', unit: '°C', minSpan: 0.3,
      series: [{ key: 'skt', label: 'SKT', color: '#90be6d' }] }),
    eeg: new Plot($('plot-eeg'), { title: 'EEG relative band power', unit: '%', minSpan: 10,
      series: [] }),
  };
  const LANES = [{ key: 'marker', label: 'marker' }, { key: 'me', label: 'face' },
    { key: 'emotion', label: 'emotion' }];
  let windowS = Math.max(30, Math.min(3600, Number(params.get('window')) || 300));
  let viewRig = null; // the rig object whose events the list currently shows

  function renderRigView() {
    const rig = rigs.get(selected) || null;
    if (viewSwitched || viewRig !== rig) {
      viewSwitched = false;
      viewRig = rig;
      $('rig-events').replaceChildren();
      if (rig) { rig.pendingEvents = rig.events.slice(-LIMITS.eventsDom); rig.viewDirty = true; rig.plotsDirty = true; }
      rigHealthVersion = -1;
    }
    setText($('rig-title'), selected);
    if (!rig) {
      setText($('rig-state'), 'not seen yet');
      setData($('rig-state'), 'state', 'unknown');
      drawPlots(null);
      return;
    }
    if (rig.viewDirty) {
      rig.viewDirty = false;
      const st = stateOf(rig);
      setText($('rig-state'), isStale(rig) ? 'online · silent' : st);
      setData($('rig-state'), 'state', st);
      const recText = rig.recording === true ? '● recording' : rig.recording === false ? 'not recording' : 'recording: unknown';
      setText($('rig-rec'), recText);
      setData($('rig-rec'), 'on', rig.recording === true ? '1' : '0');
      const s = rig.status || {};
      setText($('rig-versions'), `software ${s.software_version || '–'} · model ${s.model_version || '–'} · config ${s.config_hash || '–'}` +
        (!rig.online && rig.reason ? ` · offline: ${rig.reason}` : ''));
      const live = client && conn.state === 'connected' && rig.online !== false;
      $('btn-start').disabled = !live || rig.recording === true;
      $('btn-stop').disabled = !live || rig.recording === false;
      renderCmds(rig);
      if (rigHealthVersion !== rig.healthVersion) {
        $('rig-health').replaceChildren(el('p', 'muted', hostLine(rig.health)),
          streamsTable(rig.health, s.streams));
        rigHealthVersion = rig.healthVersion;
      }
    }
    if (rig.pendingEvents.length) {
      // Newest first by event time; events come nearly in order, so the scan is short.
      const list = $('rig-events');
      for (const ev of rig.pendingEvents) {
        const li = eventItem(ev);
        let at = list.firstElementChild;
        while (at && Number(at.dataset.t) > ev.t) at = at.nextElementSibling;
        list.insertBefore(li, at);
      }
      while (list.childElementCount > LIMITS.eventsDom) list.lastElementChild.remove();
      rig.pendingEvents.length = 0;
    }
    if (rig.plotsDirty || plotsTick) { drawPlots(rig); rig.plotsDirty = false; plotsTick = false; }
  }
  let rigHealthVersion = -1;
  let plotsTick = false;

  function drawPlots(rig) {
    const tNow = rigNow(rig);
    const w = windowS * 1000;
    const pts = rig ? rig.vitals : [];
    plots.hr.draw(pts, tNow, w);
    plots.rr.draw(pts, tNow, w);
    plots.eda.draw(pts, tNow, w);
    plots.skt.draw(pts, tNow, w);
    const bands = rig ? rig.bands : [];
    if (plots.eeg.opts.series.length !== bands.length) {
      plots.eeg.opts.series = bands.map((b, i) => ({ key: 'eeg.' + b, label: b, color: BAND_COLORS[Math.min(i, BAND_COLORS.length - 1)] }));
    }
    plots.eeg.draw(pts, tNow, w);
    window.MmmePlot.drawTimeline($('plot-timeline'), LANES, rig ? rig.events : [], tNow, w);
  }

  function renderCmds(rig) {
    const list = $('rig-cmds');
    list.replaceChildren();
    const items = Array.from(rig.cmds.values()).reverse();
    for (const c of items) {
      const li = el('li', 'cmd');
      li.dataset.cmdId = c.cmd_id === null ? '' : c.cmd_id;
      li.dataset.state = c.state;
      li.dataset.mine = c.mine ? '1' : '0';
      li.append(el('span', 'when', clock(c.sentAt)), el('strong', null, c.cmd || '(unknown command)'),
        el('code', null, c.cmd_id === null ? 'no cmd_id' : c.cmd_id));
      let text;
      if (c.state === 'ok') {
        const r = c.ack && c.ack.result ? JSON.stringify(c.ack.result) : '';
        text = `ack ok in ${c.ackAt - c.sentAt} ms` + (r && r !== '{}' ? ` · ${clip(r, 120)}` : '');
      } else if (c.state === 'error') {
        text = c.ack ? `ack error: ${c.ack.error || 'refused'}` : (c.note || 'failed');
      } else if (c.state === 'timeout') {
        text = `no ack within ${ACK_TIMEOUT_MS / 1000} s`;
      } else {
        text = c.mine ? (c.note || 'waiting for the ack') : 'sent by another console';
      }
      li.append(el('span', 'ack', text));
      list.append(li);
    }
  }

  function bars(probs, max, label) {
    const box = el('span', 'probs');
    if (label) box.append(el('span', 'group', label));
    const entries = Object.entries(probs || {}).sort((a, b) => b[1] - a[1]).slice(0, max || 6);
    for (const [k, v] of entries) {
      const b = el('span', 'prob');
      b.title = `${k}: ${v}`;
      const fill = el('span', 'fill');
      fill.style.width = `${Math.round(Math.max(0, Math.min(1, v)) * 100)}%`;
      fill.style.background = EMO_COLORS[k] || '#94a3b8';
      const bar = el('span', 'bar');
      bar.append(fill);
      b.append(el('span', 'k', k), bar, el('span', 'v', v.toFixed(2)));
      box.append(b);
    }
    return box;
  }

  function eventItem(ev) {
    const li = el('li', 'ev ' + ev.type);
    li.dataset.type = ev.type;
    li.dataset.t = String(ev.t);
    if (ev.msgId) li.dataset.msgId = ev.msgId;
    li.append(el('span', 'when', clock(ev.t)));
    const d = ev.doc || {};
    if (ev.type === 'me') {
      li.dataset.kind = d.kind;
      const tag = el('span', 'tag', d.kind === 'micro' ? 'micro-expression' : 'macro-expression');
      tag.style.borderColor = ev.color;
      li.append(tag, el('span', 'regions', (d.regions || []).join(', ') || 'no region'));
      if (d.aus && d.aus.length) li.append(el('span', 'aus', d.aus.join(' ')));
      li.append(el('span', 'conf', `conf ${num(d.confidence, 2)}`));
      const iv = d.interval || {};
      if (typeof iv.onset_ns === 'number' && typeof iv.offset_ns === 'number') {
        li.append(el('span', 'muted', `${((iv.offset_ns - iv.onset_ns) / 1e6).toFixed(0)} ms`));
      }
      if (d.visual_probs) li.append(bars(d.visual_probs, 3, 'visual'));
    } else if (ev.type === 'emotion') {
      li.dataset.predicted = d.predicted;
      const tag = el('span', 'tag', `emotion: ${d.predicted}` + (d.predicted_emotion ? ` (${d.predicted_emotion})` : ''));
      tag.style.borderColor = ev.color;
      li.append(tag, bars(d.composite, 3, 'fused'));
      if (d.emotions && Object.keys(d.emotions).length) li.append(bars(d.emotions, 3, 'top emotions'));
      const cb = d.contributions || {};
      li.append(el('span', 'muted', `visual ${num(cb.visual, 2)} · eeg ${num(cb.eeg, 2)} · peripheral ${num(cb.peripheral, 2)}`));
    } else if (ev.type === 'marker') {
      li.dataset.code = String(ev.code);
      li.append(el('span', 'tag', `marker ${ev.code}`));
    } else {
      li.append(el('span', 'tag', ev.text));
    }
    return li;
  }

  // ---------------------------------------------------------------- routing and UI
  function route() {
    const m = /^#\/rig\/(.+)$/.exec(location.hash);
    selected = m ? decodeURIComponent(m[1]) : null;
    $('fleet-view').hidden = selected !== null;
    $('rig-view').hidden = selected === null;
    viewSwitched = true;
    fleetOrderDirty = true;
    for (const r of rigs.values()) r.fleetDirty = true;
    schedule();
  }

  function tick() {
    const now = Date.now();
    for (const rig of rigs.values()) {
      for (const c of rig.cmds.values()) {
        if (c.state === 'pending' && c.mine && now - c.sentAt > ACK_TIMEOUT_MS) {
          c.state = 'timeout';
          rig.viewDirty = true;
        }
      }
      if (isStale(rig) !== !!rig.wasStale) { rig.wasStale = isStale(rig); rig.fleetDirty = true; rig.viewDirty = true; }
    }
    plotsTick = true;
    const avg = stats.updates ? stats.updateMsSum / stats.updates : 0;
    setText($('perf'), `${stats.applied} messages · ${stats.duplicates} duplicates · ` +
      `${stats.unreadable} unreadable · update ${avg.toFixed(1)} ms avg`);
    schedule();
  }

  function init() {
    const url = params.get('url') || localStorageGet('url') ||
      `ws://${location.hostname || 'localhost'}:9001`;
    $('conn-url').value = url;
    $('conn-user').value = params.get('username') || params.get('user') || localStorageGet('username') || '';
    $('conn-pass').value = params.get('password') || params.get('pass') || '';
    if (params.get('rig') && !location.hash) location.hash = '#/rig/' + encodeURIComponent(params.get('rig'));
    $('plot-window').value = String(windowS);
    $('plot-window').addEventListener('change', (e) => {
      windowS = Number(e.target.value) || 300;
      const r = rigs.get(selected);
      if (r) r.plotsDirty = true;
      schedule();
    });
    $('conn-form').addEventListener('submit', (e) => {
      e.preventDefault();
      if (client) disconnect();
      else connect($('conn-url').value.trim(), $('conn-user').value, $('conn-pass').value);
    });
    $('errors-clear').addEventListener('click', () => { errors.clear(); errorsDirty = true; schedule(); });
    $('btn-start').addEventListener('click', () => { if (selected) sendCommand(selected, 'start_recording', {}); });
    $('btn-stop').addEventListener('click', () => { if (selected) sendCommand(selected, 'stop_recording', {}); });
    window.addEventListener('hashchange', route);
    window.addEventListener('resize', () => { const r = rigs.get(selected); if (r) r.plotsDirty = true; schedule(); });
    route();
    setInterval(tick, 1000);
    loadSchemas().then(() => {
      errorsDirty = true;
      api.ready = true;
      if (params.get('url') && params.get('connect') !== '0') connect(url, $('conn-user').value, $('conn-pass').value);
      schedule();
    });
  }
  function localStorageGet(k) { try { return localStorage.getItem(STORE + k); } catch (e) { return null; } }

  // ---------------------------------------------------------------- read-only API
  const api = {
    ready: false,
    stats() {
      const s = Object.assign({}, stats);
      s.avgUpdateMs = s.updates ? s.updateMsSum / s.updates : 0;
      s.avgFrameMs = s.frames ? s.frameMsSum / s.frames : 0;
      s.avgHandleMs = s.messages ? s.handleMsSum / s.messages : 0;
      s.seconds = (performance.now() - s.since) / 1000;
      return s;
    },
    resetStats,
    conn() { return Object.assign({}, conn); },
    rigIds() { return Array.from(rigs.keys()); },
    rig(id) {
      const r = rigs.get(id);
      if (!r) return null;
      return { id: r.id, state: stateOf(r), recording: r.recording, vitals: r.vitals.length,
        events: r.events.length, unreadable: r.unreadable, lastSeen: r.lastSeen,
        cmds: Array.from(r.cmds.values()).map((c) => ({ cmd_id: c.cmd_id, cmd: c.cmd, state: c.state })) };
    },
    errors() { return Array.from(errors.values()).map((e) => Object.assign({}, e)); },
    sendCommand,
  };
  window.mmmeDashboard = api;
  init();
})();
