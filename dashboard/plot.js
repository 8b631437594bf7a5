/* A small canvas plotter for the dashboard: time series over a sliding window, and an
 * event timeline. No dependencies. Each draw sets canvas.dataset.points to the number of
 * data points it drew (tests and people can read it). */
'use strict';

(function (global) {
  const AXIS = '#8a94a6';
  const GRID = 'rgba(138,148,166,0.18)';
  const TEXT = '#c9d1de';
  const FONT = '11px system-ui, sans-serif';

  /** Size the backing store to the element's CSS size (crisp on HiDPI); returns the
   *  2D context scaled so drawing uses CSS pixels, plus the size. */
  function prepare(canvas) {
    const dpr = global.devicePixelRatio || 1;
    const w = Math.max(50, canvas.clientWidth | 0);
    const h = Math.max(30, canvas.clientHeight | 0);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = FONT;
    return { ctx, w, h };
  }

  function niceTicks(lo, hi, n) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) out.push(v);
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function timeLabel(s) {
    return s === 0 ? 'now' : (s % 60 === 0 ? `-${s / 60} min` : `-${s} s`);
  }

  class Plot {
    /** opts: {title, unit, series: [{key, label, color}], minSpan} */
    constructor(canvas, opts) {
      this.canvas = canvas;
      this.opts = Object.assign({ minSpan: 1, series: [] }, opts);
    }

    /** points: oldest-first array of {t (ms), [key]: number|null}; draws those within
     *  [tNow - windowMs, tNow]. Returns the number of points drawn. */
    draw(points, tNow, windowMs) {
      const { ctx, w, h } = prepare(this.canvas);
      const L = 44, R = 8, T = 16, B = 16;
      const pw = w - L - R, ph = h - T - B;
      const t0 = tNow - windowMs;
      // First point inside the window (binary search: points are in time order).
      let lo = 0, hi = points.length;
      while (lo < hi) { const m = (lo + hi) >> 1; if (points[m].t < t0) lo = m + 1; else hi = m; }
      const first = lo;
      let ymin = Infinity, ymax = -Infinity, n = 0;
      for (let i = first; i < points.length; i++) {
        const p = points[i];
        if (p.t > tNow) continue;
        n++;
        for (const s of this.opts.series) {
          const v = p[s.key];
          if (typeof v === 'number' && isFinite(v)) {
            if (v < ymin) ymin = v;
            if (v > ymax) ymax = v;
          }
        }
      }
      const haveY = ymin <= ymax;
      if (!haveY) { ymin = 0; ymax = 1; }
      const span = Math.max(ymax - ymin, this.opts.minSpan);
      const mid = (ymax + ymin) / 2;
      ymin = mid - span * 0.6; ymax = mid + span * 0.6;
      const X = (t) => L + ((t - t0) / windowMs) * pw;
      const Y = (v) => T + (1 - (v - ymin) / (ymax - ymin)) * ph;

      // Grid and axes.
      ctx.strokeStyle = GRID; ctx.fillStyle = AXIS; ctx.lineWidth = 1;
      ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
      for (const v of niceTicks(ymin, ymax, 3)) {
        const y = Math.round(Y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke();
        ctx.fillText(fmt(v), L - 4, y);
      }
      ctx.textAlign = 'center'; ctx.textBaseline = 'alphabetic';
      const winS = windowMs / 1000;
      const step = winS <= 60 ? 15 : winS <= 300 ? 60 : 300;
      for (let s = 0; s <= winS; s += step) {
        const x = Math.round(X(tNow - s * 1000)) + 0.5;
        ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, T + ph); ctx.stroke();
        ctx.fillText(timeLabel(s), Math.min(Math.max(x, L + 14), L + pw - 14), h - 3);
      }

      // Series: a gap wherever a value is missing or more than 3 s apart.
      ctx.save();
      ctx.beginPath(); ctx.rect(L, T, pw, ph); ctx.clip();
      ctx.lineWidth = 1.6; ctx.lineJoin = 'round';
      for (const s of this.opts.series) {
        ctx.strokeStyle = s.color;
        ctx.beginPath();
        let pen = false, lastT = -Infinity;
        for (let i = first; i < points.length; i++) {
          const p = points[i];
          const v = p[s.key];
          if (typeof v !== 'number' || !isFinite(v) || p.t - lastT > 3000) pen = false;
          if (typeof v === 'number' && isFinite(v)) {
            const x = X(p.t), y = Y(v);
            if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); ctx.arc(x, y, 0.8, 0, 6.3); ctx.moveTo(x, y); }
            pen = true; lastT = p.t;
          }
        }
        ctx.stroke();
      }
      ctx.restore();

      // Title, latest values, legend.
      ctx.textAlign = 'left'; ctx.textBaseline = 'alphabetic';
      ctx.fillStyle = TEXT;
      const title = this.opts.title + (this.opts.unit ? ` (${this.opts.unit})` : '');
      ctx.fillText(title, L, 12);
      let x = L + ctx.measureText(title).width + 12;
      const last = points.length ? points[points.length - 1] : null;
      for (const s of this.opts.series) {
        const v = last ? last[s.key] : null;
        const label = (this.opts.series.length > 1 ? s.label + ' ' : '') +
          (typeof v === 'number' && isFinite(v) ? fmt(v) : '–');
        ctx.fillStyle = s.color;
        ctx.fillText(label, x, 12);
        x += ctx.measureText(label).width + 10;
      }
      this.canvas.dataset.points = String(n);
      return n;
    }
  }

  /** lanes: [{key, label}], events: oldest-first [{t, lane, color, label}]. */
  function drawTimeline(canvas, lanes, events, tNow, windowMs) {
    const { ctx, w, h } = prepare(canvas);
    const L = 52, R = 8, T = 4, B = 14;
    const pw = w - L - R, laneH = (h - T - B) / lanes.length;
    const t0 = tNow - windowMs;
    const X = (t) => L + ((t - t0) / windowMs) * pw;
    ctx.textBaseline = 'middle';
    lanes.forEach((lane, i) => {
      const y = T + laneH * (i + 0.5);
      ctx.fillStyle = AXIS; ctx.textAlign = 'right';
      ctx.fillText(lane.label, L - 4, y);
      ctx.strokeStyle = GRID; ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke();
    });
    // Bars first; then a label where it fits before the next event of its lane.
    const perLane = lanes.map(() => []);
    let n = 0;
    for (const e of events) {
      if (e.t < t0 || e.t > tNow + 1000) continue;
      const i = lanes.findIndex((l) => l.key === e.lane);
      if (i < 0) continue;
      const x = X(Math.min(e.t, tNow)), y = T + laneH * (i + 0.5);
      ctx.fillStyle = e.color;
      ctx.fillRect(x - 1.5, y - laneH * 0.35, 3, laneH * 0.7);
      perLane[i].push({ x, y, label: e.label });
      n++;
    }
    ctx.fillStyle = TEXT; ctx.textAlign = 'left';
    for (const items of perLane) {
      items.sort((a, b) => a.x - b.x);
      items.forEach((it, k) => {
        if (!it.label) return;
        const tw = ctx.measureText(it.label).width;
        const next = k + 1 < items.length ? items[k + 1].x : L + pw;
        if (next - it.x > tw + 8) ctx.fillText(it.label, it.x + 4, it.y);
        else if (k + 1 === items.length && it.x - tw - 4 > L) ctx.fillText(it.label, it.x - 4 - tw, it.y);
      });
    }
    ctx.fillStyle = AXIS; ctx.textAlign = 'right'; ctx.textBaseline = 'alphabetic';
    ctx.fillText('now', L + pw, h - 2);
    ctx.textAlign = 'left';
    ctx.fillText(timeLabel(Math.round(windowMs / 1000)), L, h - 2);
    canvas.dataset.points = String(n);
    return n;
  }

  global.MmmePlot = { Plot, drawTimeline };
})(window);
