// hopmq console: the network map. A deterministic layout (a circle for small networks, then a
// force-directed refinement started from that circle, a fixed number of steps, no randomness)
// computed once per shape of the network, and an SVG drawn from /api/network on every poll.
'use strict';

window.hopmq = window.hopmq || {};

(function (ns) {
  const WIDTH = 1000;
  const HEIGHT = 640;
  const MARGIN = 60;
  const STEPS = 300;
  let cached = { key: '', positions: new Map() };

  // Positions in [0,1]², by manager name.
  function layout(names, links) {
    const n = names.length;
    const index = new Map(names.map((name, i) => [name, i]));
    const pos = names.map((_, i) => {
      const angle = (2 * Math.PI * i) / Math.max(1, n) - Math.PI / 2;
      return { x: 0.5 + 0.45 * Math.cos(angle), y: 0.5 + 0.45 * Math.sin(angle) };
    });
    if (n <= 12) return new Map(names.map((name, i) => [name, pos[i]]));
    const edges = links
      .map((l) => [index.get(l.between[0]), index.get(l.between[1])])
      .filter(([a, b]) => a !== undefined && b !== undefined);
    const k = Math.sqrt(1 / n);
    for (let step = 0; step < STEPS; step += 1) {
      const temperature = 0.1 * (1 - step / STEPS) + 0.002;
      const force = pos.map(() => ({ x: 0, y: 0 }));
      for (let i = 0; i < n; i += 1) {
        for (let j = i + 1; j < n; j += 1) {
          const dx = pos[i].x - pos[j].x;
          const dy = pos[i].y - pos[j].y;
          const d2 = Math.max(1e-6, dx * dx + dy * dy);
          const push = (k * k) / d2;
          force[i].x += dx * push; force[i].y += dy * push;
          force[j].x -= dx * push; force[j].y -= dy * push;
        }
      }
      for (const [a, b] of edges) {
        const dx = pos[a].x - pos[b].x;
        const dy = pos[a].y - pos[b].y;
        const d = Math.max(1e-3, Math.sqrt(dx * dx + dy * dy));
        const pull = d / k;
        force[a].x -= dx * pull; force[a].y -= dy * pull;
        force[b].x += dx * pull; force[b].y += dy * pull;
      }
      for (let i = 0; i < n; i += 1) {
        const length = Math.max(1e-9, Math.hypot(force[i].x, force[i].y));
        const move = Math.min(length, temperature);
        pos[i].x += (force[i].x / length) * move;
        pos[i].y += (force[i].y / length) * move;
      }
    }
    // Fit the result into the unit square.
    const xs = pos.map((p) => p.x);
    const ys = pos.map((p) => p.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    return new Map(names.map((name, i) => [name, {
      x: (pos[i].x - x0) / Math.max(1e-9, x1 - x0),
      y: (pos[i].y - y0) / Math.max(1e-9, y1 - y0),
    }]));
  }

  function positions(network) {
    const names = network.managers.map((m) => m.name);
    const key = names.join(',') + '|' + network.links.map((l) => l.id).join(',');
    if (cached.key !== key) cached = { key: key, positions: layout(names, network.links) };
    return cached.positions;
  }

  function place(p) {
    return { x: MARGIN + p.x * (WIDTH - 2 * MARGIN), y: MARGIN + p.y * (HEIGHT - 2 * MARGIN) };
  }

  // A link's label on the map: on a small map every own link has one; on a large one only
  // those with messages waiting, so the labels never bury the map (the tooltip has them all).
  function drawLink(link, from, to, small) {
    const classes = ['link', 'state-' + link.state, link.in_route_tree ? 'tree' : ''].join(' ');
    const group = ns.svg('g', {
      class: classes, 'data-link': link.id, 'data-state': link.state,
      'data-tree': link.in_route_tree ? 'true' : 'false',
    });
    group.appendChild(ns.svg('line', { x1: from.x, y1: from.y, x2: to.x, y2: to.y }));
    let label = 'cost ' + link.cost + ', ' + link.state;
    if (link.reported_by.length) label += ' (reported by ' + link.reported_by.join(', ') + ')';
    if (link.waiting !== null) label += ', ' + link.waiting + ' waiting';
    if (link.send_rate !== null) label += ', ' + ns.rate(link.send_rate) + ' sent';
    if (link.rtt_us !== null) label += ', rtt ' + (link.rtt_us / 1000).toFixed(1) + ' ms';
    group.appendChild(ns.svg('title', {}, link.between[0] + ' – ' + link.between[1] + ': ' + label));
    if (link.waiting !== null && (!small || link.waiting > 0)) {
      const text = link.waiting + ' waiting · ' + ns.rate(link.send_rate);
      group.appendChild(ns.svg('text', {
        class: 'link-label', x: (from.x + to.x) / 2, y: (from.y + to.y) / 2 - 4,
        'text-anchor': 'middle', 'data-waiting': link.waiting,
      }, text));
    }
    return group;
  }

  function drawManager(manager, at, small) {
    const group = ns.svg('g', {
      class: 'manager state-' + manager.state + (manager.local ? ' local' : ''),
      'data-manager': manager.name, 'data-state': manager.state,
      'data-local': manager.local ? 'true' : 'false',
      transform: 'translate(' + at.x.toFixed(1) + ',' + at.y.toFixed(1) + ')',
    });
    group.appendChild(ns.svg('circle', { r: small ? 7 : 14 }));
    group.appendChild(ns.svg('text', {
      class: 'manager-name', y: small ? -10 : -19, 'text-anchor': 'middle',
    }, manager.name));
    if (manager.queues !== null) {
      group.appendChild(ns.svg('text', {
        class: 'manager-queues', y: small ? 20 : 30, 'text-anchor': 'middle',
        'data-queues': manager.queues, 'data-depth': manager.depth,
      }, manager.queues + ' queues, depth ' + manager.depth));
    }
    let title = manager.name + ': ' + manager.state;
    if (manager.next_hop) title += ', via ' + manager.next_hop + ', cost ' + manager.cost;
    group.appendChild(ns.svg('title', {}, title));
    return group;
  }

  function legend() {
    const states = ['up', 'down', 'drained', 'unknown'];
    return ns.el('p', { class: 'legend' },
      states.map((s) => ns.el('span', { class: 'swatch state-' + s }, s)),
      ns.el('span', { class: 'swatch tree' }, 'route tree from this manager'));
  }

  // The map page's content for one /api/network answer.
  ns.renderMap = function (network) {
    const at = positions(network);
    const small = network.managers.length > 20;
    const map = ns.svg('svg', {
      id: 'network-map', class: 'map', viewBox: '0 0 ' + WIDTH + ' ' + HEIGHT,
      'data-managers': network.managers.length, 'data-links': network.links.length,
      role: 'img', 'aria-label': 'network map',
    });
    const links = ns.svg('g', { class: 'links' });
    for (const link of network.links) {
      const a = at.get(link.between[0]);
      const b = at.get(link.between[1]);
      if (a && b) links.appendChild(drawLink(link, place(a), place(b), small));
    }
    const managers = ns.svg('g', { class: 'managers' });
    for (const manager of network.managers) {
      const p = at.get(manager.name);
      if (p) managers.appendChild(drawManager(manager, place(p), small));
    }
    map.appendChild(links);
    map.appendChild(managers);
    const own = network.links.filter((l) => l.waiting !== null);
    const rows = own.map((l) => ns.el('tr', {},
      ns.el('td', {}, l.between[0] + ' – ' + l.between[1]),
      ns.el('td', {}, l.state),
      ns.el('td', { class: 'n' }, l.waiting),
      ns.el('td', { class: 'n' }, ns.rate(l.send_rate)),
      ns.el('td', { class: 'n' }, l.rtt_us === null ? '–' : (l.rtt_us / 1000).toFixed(1) + ' ms')));
    return [
      ns.el('h1', {}, 'Network seen from ' + network.manager),
      legend(),
      map,
      ns.el('h2', {}, 'This manager\'s links'),
      ns.table({ class: 'grid' }, ['link', 'state', 'waiting', 'sent', 'rtt'], rows),
    ];
  };
})(window.hopmq);
