// hopmq console: hash routes (#/map, #/queues, #/queues/NAME, #/manager), polling of the JSON
// API every two seconds, and the queues and manager pages. Read-only. With http_token set,
// the token comes from #token=... in the address or a form, and stays in sessionStorage.
'use strict';

(function (ns) {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'hopmq-console-token';
  const BROWSE_LIMIT = 50;
  const el = ns.el;
  let token = null;
  let timer = null;
  let generation = 0;

  // A token given as #token=... is kept for the session and taken out of the address.
  function takeToken() {
    const hash = window.location.hash;
    if (hash.startsWith('#token=')) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(hash.slice('#token='.length)));
      window.history.replaceState(null, '', window.location.pathname + '#/map');
    }
    token = sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(path) {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    const response = await fetch(path, { headers: headers, cache: 'no-store' });
    if (response.status === 401) {
      const error = new Error('this console needs its bearer token (http_token)');
      error.unauthorized = true;
      throw error;
    }
    if (!response.ok) throw new Error(path + ': HTTP ' + response.status);
    return response.json();
  }

  function banner(id, text) {
    const node = document.getElementById(id);
    node.textContent = text || '';
    node.hidden = !text;
  }

  function route() {
    const hash = window.location.hash || '#/map';
    const parts = hash.replace(/^#\/?/, '').split('/');
    const page = ['map', 'queues', 'manager'].includes(parts[0]) ? parts[0] : 'map';
    const queue = page === 'queues' && parts[1] ? decodeURIComponent(parts[1]) : null;
    return { page: page, queue: queue };
  }

  // ----- queues page -----

  function queueRow(q, series) {
    const chart = series
      ? ns.chart([{ values: series.depth, class: 'depth' }], 120, 24, { 'data-chart': 'depth' })
      : '';
    return el('tr', {
      'data-queue': q.name, 'data-depth': q.depth, 'data-leased': q.leased,
      class: q.dead_letter ? 'dead-letter' : null,
    },
    el('td', {}, el('a', { href: '#/queues/' + encodeURIComponent(q.name) }, q.name)),
    el('td', { class: 'n depth' }, q.depth),
    el('td', { class: 'n' }, q.leased),
    el('td', { class: 'n' }, ns.bytes(q.bytes)),
    el('td', { class: 'n' }, ns.duration(q.oldest_age_ms)),
    el('td', { class: 'n' }, ns.rate(q.put_rate)),
    el('td', { class: 'n' }, ns.rate(q.get_rate)),
    el('td', {}, chart));
  }

  function messageView(m) {
    const trace = m.trace.map((t) => t.manager + ' ' + ns.time(t.at_ms)).join(' → ');
    const headers = Object.entries(m.headers).map(([k, v]) => el('li', {}, k + ': ' + v));
    const length = m.body.length + ' bytes' + (m.body.truncated ? ' (first shown)' : '');
    return el('article', {
      class: 'message', 'data-message-id': m.id, 'data-origin': m.origin,
      'data-dead-letter-reason': m.dead_letter_reason,
    },
    el('h4', {}, m.id),
    el('dl', {},
      el('dt', {}, 'origin'), el('dd', {}, m.origin),
      el('dt', {}, 'priority'), el('dd', {}, m.priority),
      el('dt', {}, 'deliveries'), el('dd', {}, m.delivery_count),
      m.dead_letter_reason ? [el('dt', {}, 'dead-letter reason'),
        el('dd', { class: 'reason' }, m.dead_letter_reason)] : null,
      el('dt', {}, 'trace'), el('dd', { class: 'trace' }, trace || '–'),
      el('dt', {}, 'body'), el('dd', {}, m.body.encoding + ', ' + length)),
    headers.length ? el('ul', { class: 'headers' }, headers) : null,
    el('pre', { class: 'body', 'data-body': m.body.encoding }, m.body.shown));
  }

  function messagesSection(name, browsed, title) {
    return el('section', { class: 'messages', 'data-browse': name },
      el('h2', {}, title),
      browsed.messages.length
        ? browsed.messages.map(messageView)
        : el('p', { class: 'muted' }, 'No messages.'));
  }

  function detailChart(series) {
    if (!series) return null;
    return el('figure', { class: 'detail-chart' },
      ns.chart([
        { values: series.put_rate, class: 'put' },
        { values: series.get_rate, class: 'get' },
      ], 600, 80, { 'data-chart': 'rates' }),
      ns.chart([{ values: series.depth, class: 'depth' }], 600, 80, { 'data-chart': 'depth' }),
      el('figcaption', {}, 'last ' + series.depth.length + ' samples: put/s (blue), get/s (green), depth (grey)'));
  }

  async function queuesPage(selected) {
    const [queues, history] = await Promise.all([api('/api/queues'), api('/api/history')]);
    const dlq = queues.queues.find((q) => q.dead_letter && q.depth > 0);
    const browse = async (name) =>
      api('/api/queues/' + encodeURIComponent(name) + '/messages?limit=' + BROWSE_LIMIT);
    const [browsed, dead] = await Promise.all([
      selected ? browse(selected) : null,
      dlq && dlq.name !== selected ? browse(dlq.name) : null,
    ]);
    const rows = queues.queues.map((q) => queueRow(q, history.queues[q.name]));
    const content = [
      el('h1', {}, 'Queues of ' + queues.manager),
      ns.table({ class: 'grid', id: 'queues' },
        ['queue', 'depth', 'leased', 'bytes', 'oldest', 'put', 'get', 'depth, last 10 min'], rows),
    ];
    if (selected && browsed) {
      content.push(detailChart(history.queues[selected]));
      content.push(messagesSection(selected, browsed, 'First messages of ' + selected));
    }
    if (dead) content.push(messagesSection(dlq.name, dead, 'Dead letters (' + dlq.name + ')'));
    return { manager: queues.manager, content: content };
  }

  // ----- manager page -----

  function keyValues(attrs, pairs) {
    return el('dl', attrs, pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  function settingsRows(prefix, value) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      return Object.entries(value).flatMap(([k, v]) => settingsRows(prefix ? prefix + '.' + k : k, v));
    }
    return [el('tr', { 'data-setting': prefix },
      el('td', {}, prefix), el('td', {}, value === null ? '–' : JSON.stringify(value)))];
  }

  function fsyncChart(histogram) {
    const max = Math.max(1, ...histogram.map((b) => b.count));
    const width = 16;
    const svg = ns.svg('svg', {
      class: 'histogram', width: histogram.length * width, height: 80,
      viewBox: '0 0 ' + histogram.length * width + ' 80', 'data-chart': 'fsync',
    });
    histogram.forEach((b, i) => {
      const h = (b.count / max) * 70;
      const bar = ns.svg('rect', { x: i * width + 1, y: 75 - h, width: width - 2, height: Math.max(h, 0.5) });
      bar.appendChild(ns.svg('title', {},
        (b.below_us === null ? 'slower' : 'under ' + b.below_us + ' µs') + ': ' + b.count));
      svg.appendChild(bar);
    });
    return svg;
  }

  async function managerPage() {
    const m = await api('/api/manager');
    const s = m.store;
    const links = m.links.map((l) => el('tr', { 'data-neighbour': l.neighbour, 'data-state': l.state },
      el('td', {}, l.neighbour), el('td', {}, l.state), el('td', {}, l.routing),
      el('td', { class: 'n' }, l.rtt_us === null ? '–' : (l.rtt_us / 1000).toFixed(2) + ' ms'),
      el('td', { class: 'n' }, l.messages_sent), el('td', { class: 'n' }, l.messages_acked),
      el('td', { class: 'n' }, l.messages_received), el('td', { class: 'n' }, l.transmission_depth),
      el('td', { class: 'n' }, l.in_flight), el('td', {}, l.last_error || '')));
    const content = [
      el('h1', {}, 'Manager ' + m.manager),
      keyValues({ id: 'manager-overview' }, [
        ['version', m.version], ['uptime', ns.duration(m.uptime_secs * 1000)],
        ['messages put', m.messages_put], ['delivered', m.messages_delivered],
        ['forwarded', m.messages_forwarded], ['API token', m.token_required ? 'required' : 'off'],
      ]),
      el('h2', {}, 'Store'),
      keyValues({ id: 'store' }, [
        ['segments', s.segments], ['on disk', ns.bytes(s.bytes)], ['commits', s.commits],
        ['records', s.records], ['last commit batch', s.last_batch_records + ' records'],
        ['sync', s.sync], ['fsyncs', s.fsyncs],
        ['fsync mean', s.fsyncs ? ((s.fsync_seconds_total / s.fsyncs) * 1000).toFixed(2) + ' ms' : '–'],
        ['fsync max', (s.fsync_seconds_max * 1000).toFixed(2) + ' ms'],
      ]),
      el('h3', {}, 'fsync latency (buckets of powers of two, µs)'),
      fsyncChart(s.fsync_histogram),
      el('h2', {}, 'Links'),
      ns.table({ class: 'grid', id: 'links' }, ['neighbour', 'channel', 'routing', 'rtt', 'sent',
        'acked', 'received', 'waiting', 'in flight', 'last error'], links),
      el('h2', {}, 'Settings in force'),
      ns.table({ class: 'grid', id: 'settings' }, ['setting', 'value'], settingsRows('', m.settings)),
    ];
    return { manager: m.manager, content: content };
  }

  // ----- map page -----

  async function mapPage() {
    const network = await api('/api/network');
    const refused = network.refused;
    banner('refused-banner', refused
      ? 'A topology edit was refused (' + ns.time(refused.at_ms) + '): ' + refused.error : '');
    return { manager: network.manager, content: ns.renderMap(network) };
  }

  // Asks for the token in the page (no blocking dialog); kept for the browser session.
  function askToken() {
    if (document.getElementById('token-form')) return;
    const input = el('input', { type: 'password', id: 'token-input', autocomplete: 'off' });
    const form = el('form', { id: 'token-form' },
      el('label', {}, 'Bearer token ', input), ' ', el('button', { type: 'submit' }, 'Use'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (!input.value) return;
      sessionStorage.setItem(TOKEN_KEY, input.value);
      token = input.value;
      generation += 1;
      schedule(0);
    });
    document.getElementById('view').replaceChildren(form);
    input.focus();
  }

  // ----- the loop -----

  async function refresh() {
    const mine = generation;
    const where = route();
    for (const page of ['map', 'queues', 'manager']) {
      document.getElementById('nav-' + page).classList.toggle('active', page === where.page);
    }
    try {
      let shown;
      if (where.page === 'queues') shown = await queuesPage(where.queue);
      else if (where.page === 'manager') shown = await managerPage();
      else shown = await mapPage();
      if (mine !== generation) return;
      if (where.page !== 'map') banner('refused-banner', '');
      document.getElementById('view').replaceChildren(...shown.content.filter(Boolean));
      document.getElementById('manager-name').textContent = shown.manager;
      document.title = 'hopmq · ' + shown.manager + ' · ' + where.page;
      document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      document.body.setAttribute('data-page', where.page);
      document.body.setAttribute('data-ready', 'true');
      if (!document.body.hasAttribute('data-first-ready-ms')) {
        // From navigation to the first page drawn: what scripts/bench-console reports.
        document.body.setAttribute('data-first-ready-ms', String(Math.round(performance.now())));
      }
      banner('error-banner', '');
    } catch (error) {
      if (mine !== generation) return;
      banner('error-banner', 'Cannot read the manager: ' + error.message);
      if (error.unauthorized) askToken();
    }
  }

  function schedule(delay) {
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(async () => {
      timer = null;
      await refresh();
      schedule(POLL_MS);
    }, delay);
  }

  window.addEventListener('hashchange', () => {
    takeToken();
    generation += 1;
    schedule(0);
  });
  takeToken();
  schedule(0);
})(window.hopmq);
