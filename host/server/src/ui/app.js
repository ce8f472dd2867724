// portcullis dashboard: polls /admin/ui/data (one request per refresh),
// renders with the DOM only (no innerHTML, no framework), unbans with a
// DELETE that carries X-Requested-With (the server's CSRF guard).
'use strict';
(() => {
  const root = document.getElementById('dashboard');
  if (!root) return;

  // Proxy mode serves the dashboard under a prefix (`[upstream] admin_prefix`).
  const BASE = location.pathname.replace(/\/admin\/ui(\/.*)?$/, '');
  const POLL_MS = 2000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const W = 600;
  const H = 150;
  const COLORS = {
    allow: '#2e9d5b',
    rate_limited: '#e3a008',
    blocked: '#d6453d',
    banned: '#7f1d1d',
    pair_locked: '#8b5cf6',
    ip_locked: '#d946ef',
    denylisted: '#6b7280',
    table_full: '#b45309',
    unavailable: '#2563eb',
  };
  const LABELS = {
    allow: 'allowed',
    rate_limited: 'rate limited',
    blocked: 'blocked',
    banned: 'banned',
    pair_locked: 'pair locked',
    ip_locked: 'ip locked',
    denylisted: 'denylisted',
    table_full: 'table full',
    unavailable: 'unavailable',
  };
  const KINDS = { request: 'requests', login_ip: 'logins', manual: 'manual' };

  const $ = (id) => document.getElementById(id);
  const banBody = $('bans').tBodies[0];
  const offBody = $('offenders').tBodies[0];
  /** key "ip|kind" -> {ip, tr, left, deadline} */
  const rows = new Map();
  /** ip -> performance.now() when its unban completed */
  const lifted = new Map();
  let timer = null;
  let inflight = false;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v);
    }
    e.append(...children);
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  function setStatus(text, cls) {
    const s = $('status');
    s.textContent = text;
    s.className = 'status ' + (cls || '');
  }

  function fmtLeft(ms) {
    if (ms === null) return 'permanent';
    let s = Math.max(0, Math.ceil(ms / 1000));
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const pad = (n) => String(n).padStart(2, '0');
    return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
  }

  function fmtAgo(s) {
    if (s < 1) return 'just now';
    if (s < 60) return `${s} s ago`;
    return `${Math.floor(s / 60)} min ${s % 60} s ago`;
  }

  function fmtNum(n) {
    return n === null || n === undefined ? 'n/a' : Number(n).toLocaleString('en');
  }

  // Countdowns run locally between polls.
  function tick() {
    const now = performance.now();
    for (const row of rows.values()) {
      if (row.deadline === null) {
        row.left.textContent = 'permanent';
        row.left.dataset.seconds = '';
      } else {
        const ms = Math.max(0, row.deadline - now);
        row.left.textContent = fmtLeft(ms);
        row.left.dataset.seconds = String(Math.ceil(ms / 1000));
      }
    }
  }

  function bansEmpty() {
    $('bans-empty').hidden = rows.size > 0;
    $('bans').hidden = rows.size === 0;
    $('bans-count').textContent = rows.size ? `(${rows.size})` : '';
  }

  function makeRow(b) {
    const btn = el('button', { type: 'button', class: 'unban', text: 'Unban' });
    btn.setAttribute('aria-label', `Unban ${b.ip}`);
    btn.addEventListener('click', () => unban(b.ip, btn));
    const left = el('td', { class: 'countdown', 'data-label': 'Time left' });
    const reason = el('td', { class: 'reason', 'data-label': 'Reason' });
    const tr = el(
      'tr',
      { 'data-ip': b.ip, 'data-kind': b.kind },
      el('td', { class: 'ip', 'data-label': 'Address', text: b.ip }),
      el('td', { class: 'kind', 'data-label': 'Key', text: KINDS[b.kind] || b.kind }),
      reason,
      left,
      el('td', { class: 'action' }, btn),
    );
    return { ip: b.ip, tr, left, reason, deadline: null };
  }

  function renderBans(bans, started, received) {
    const seen = new Set();
    for (const b of bans) {
      const t = lifted.get(b.ip);
      if (t !== undefined && started < t) continue; // answer older than the unban
      const key = `${b.ip}|${b.kind}`;
      seen.add(key);
      let row = rows.get(key);
      if (!row) {
        row = makeRow(b);
        rows.set(key, row);
        banBody.append(row.tr);
      }
      // A manual decision shows the operator's reason after its own; a
      // lock set by a log jail, the jail's name.
      const label = LABELS[b.reason] || b.reason;
      const jail = b.jail ? ` (jail ${b.jail})` : '';
      row.reason.textContent = (b.note ? `${label}: ${b.note}` : label) + jail + (b.shadow ? ' (shadow: not enforced)' : '');
      row.reason.dataset.reason = b.reason;
      row.reason.dataset.shadow = b.shadow ? 'true' : 'false';
      row.reason.className = `reason r-${b.reason}${b.shadow ? ' shadow' : ''}`;
      if (b.ms_left === null || b.ms_left === undefined) {
        row.deadline = null;
      } else {
        // Every estimate is late by the response's latency: keep the
        // earliest, unless the block was extended.
        const d = received + b.ms_left;
        if (row.deadline === null || d < row.deadline || d > row.deadline + 1500) row.deadline = d;
      }
    }
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.tr.remove();
        rows.delete(key);
      }
    }
    const cutoff = performance.now() - 30000;
    for (const [ip, t] of lifted) if (t < cutoff) lifted.delete(ip);
    bansEmpty();
    tick();
  }

  async function unban(ip, btn) {
    btn.disabled = true;
    btn.textContent = 'Unbanning…';
    try {
      const r = await fetch(`${BASE}/admin/bans/${encodeURIComponent(ip)}`, {
        method: 'DELETE',
        credentials: 'same-origin',
        headers: { 'X-Requested-With': 'portcullis' },
      });
      if (r.status === 401) {
        location.reload();
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      lifted.set(ip, performance.now());
      for (const [key, row] of rows) {
        if (row.ip === ip) {
          row.tr.remove();
          rows.delete(key);
        }
      }
      bansEmpty();
      setStatus(`unbanned ${ip}`, 'ok');
    } catch (e) {
      btn.disabled = false;
      btn.textContent = 'Unban';
      setStatus(`unban of ${ip} failed: ${e.message}`, 'bad');
    }
  }

  function niceCeil(v) {
    if (v <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function renderChart(h) {
    const chart = $('chart');
    const names = h.names.filter((n) => h.series[n]);
    let max = 0;
    for (const n of names) for (const v of h.series[n]) if (v > max) max = v;
    max = niceCeil(max);
    const nodes = [];
    for (const f of [0.25, 0.5, 0.75]) {
      nodes.push(svg('line', { x1: 0, x2: W, y1: H * f, y2: H * f, class: 'grid' }));
    }
    nodes.push(svg('line', { x1: W / 2, x2: W / 2, y1: 0, y2: H, class: 'grid' }));
    const step = W / Math.max(1, h.len - 1);
    for (const n of names) {
      const pts = h.series[n]
        .map((v, i) => `${(i * step).toFixed(1)},${(H - 1 - (v / max) * (H - 4)).toFixed(1)}`)
        .join(' ');
      const line = svg('polyline', {
        points: pts,
        fill: 'none',
        stroke: COLORS[n] || '#444',
        'stroke-width': 1.6,
        'stroke-linejoin': 'round',
        'vector-effect': 'non-scaling-stroke',
        'data-series': n,
      });
      const title = svg('title', {});
      title.textContent = LABELS[n] || n;
      line.append(title);
      nodes.push(line);
    }
    chart.replaceChildren(...nodes);
    $('chart-max').textContent = fmtNum(max);
    $('chart-mid').textContent = max >= 2 ? fmtNum(max / 2) : '';
    const legend = $('legend');
    legend.replaceChildren(
      ...h.names.map((n) => {
        const total = h.totals[n] || 0;
        const sw = el('span', { class: 'swatch' });
        sw.style.background = COLORS[n] || '#444';
        return el(
          'li',
          { class: total ? '' : 'zero', 'data-series': n },
          sw,
          el('span', { text: LABELS[n] || n }),
          el('b', { text: fmtNum(total) }),
        );
      }),
    );
  }

  function renderOffenders(list) {
    offBody.replaceChildren(
      ...list.map((o) =>
        el(
          'tr',
          { 'data-ip': o.ip },
          el('td', { class: 'ip', 'data-label': 'Address', text: o.ip }),
          el('td', { class: 'num', 'data-label': 'Denials', text: fmtNum(o.denials) }),
          el('td', { class: `reason r-${o.reason}`, 'data-label': 'Last reason', text: LABELS[o.reason] || o.reason }),
          el('td', { 'data-label': 'Last denied', text: fmtAgo(o.last_seen_s) }),
        ),
      ),
    );
    $('offenders-empty').hidden = list.length > 0;
    $('offenders').hidden = list.length === 0;
  }

  function renderTiles(d) {
    const t = d.table;
    if (t.entries !== null && t.capacity) {
      const pct = (100 * t.entries) / t.capacity;
      $('t-fill').textContent = `${fmtNum(t.entries)} / ${fmtNum(t.capacity)}`;
      $('t-bar').style.width = `${Math.min(100, pct).toFixed(1)}%`;
      $('t-bar').className = pct > 90 ? 'hot' : pct > 70 ? 'warm' : '';
      $('t-fill-sub').textContent = `${pct < 1 && pct > 0 ? '<1' : Math.round(pct)}% of capacity`;
    } else {
      $('t-fill').textContent = 'n/a';
      $('t-bar').style.width = '0';
      $('t-fill-sub').textContent = 'no local table';
    }
    $('t-evict').textContent = fmtNum(t.evictions);
    $('t-full').textContent = `table full: ${fmtNum(t.table_full)}`;
    const s = d.store;
    $('t-store').textContent = s.kind;
    const fb = s.fallback_active === null ? 'n/a' : s.fallback_active ? 'ACTIVE' : 'inactive';
    $('t-fallback').textContent = `fallback: ${fb} · errors: ${fmtNum(s.errors)}`;
    $('t-fallback').className = `sub ${s.fallback_active ? 'bad' : ''}`;
    const nodes = s.nodes || [];
    const nl = $('t-nodes');
    nl.replaceChildren(...nodes.map((n) => {
      const li = document.createElement('li');
      li.className = n.up ? '' : 'bad';
      li.textContent = `${n.node} [${n.slots}] ${n.up ? 'up' : 'DOWN'}${n.outages ? ` · outages: ${fmtNum(n.outages)}` : ''}`;
      return li;
    }));
    nl.hidden = nodes.length === 0;
    const h = d.history;
    let total = 0;
    let denied = 0;
    for (const n of h.names) {
      const v = h.series[n] ? h.series[n][h.series[n].length - 1] : 0;
      total += v;
      if (n !== 'allow') denied += v;
    }
    $('t-rate').textContent = fmtNum(total);
    $('t-denied').textContent = `denied: ${fmtNum(denied)} / s`;
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  async function poll() {
    if (inflight) return;
    if (document.hidden) {
      schedule(POLL_MS);
      return;
    }
    inflight = true;
    let next = POLL_MS;
    const started = performance.now();
    try {
      const r = await fetch(`${BASE}/admin/ui/data`, {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'application/json' },
      });
      if (r.status === 401) {
        location.reload();
        return;
      }
      if (r.status === 429) {
        const ra = parseInt(r.headers.get('retry-after') || '10', 10) || 10;
        next = ra * 1000;
        setStatus(`rate limited; retrying in ${ra} s`, 'warn');
        return;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const d = await r.json();
      const received = performance.now();
      renderBans(d.bans, started, received);
      renderChart(d.history);
      renderOffenders(d.offenders);
      renderTiles(d);
      root.dataset.updated = String(Date.now());
      setStatus(`live · ${new Date().toLocaleTimeString()}`, 'ok');
    } catch (e) {
      setStatus(`offline: ${e.message}`, 'bad');
    } finally {
      inflight = false;
      schedule(next);
    }
  }

  $('signout').addEventListener('click', async () => {
    try {
      await fetch(`${BASE}/admin/ui/logout`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'X-Requested-With': 'portcullis' },
      });
    } finally {
      location.replace(`${BASE}/admin/ui`);
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) schedule(0);
  });
  setInterval(tick, 250);
  bansEmpty();
  poll();
})();
