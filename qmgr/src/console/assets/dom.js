// hopmq console: DOM and formatting helpers shared by map.js and app.js.
// Data from the manager is only ever inserted as text (createTextNode, textContent) or as an
// attribute value (setAttribute): never parsed as markup.
'use strict';

window.hopmq = window.hopmq || {};

(function (ns) {
  const SVG = 'http://www.w3.org/2000/svg';

  // Appends children: strings and numbers become text nodes, null/undefined are skipped.
  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) {
        append(node, child);
      } else if (typeof child === 'string' || typeof child === 'number') {
        node.appendChild(document.createTextNode(String(child)));
      } else {
        node.appendChild(child);
      }
    }
    return node;
  }

  function setAttributes(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, String(value));
    }
  }

  // An HTML element: el('td', {class: 'n'}, 'text', child...).
  ns.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    return append(node, children);
  };

  // An SVG element.
  ns.svg = function (tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttributes(node, attrs);
    return append(node, children);
  };

  ns.bytes = function (n) {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? String(value) : value.toFixed(1)) + ' ' + units[unit];
  };

  ns.duration = function (ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1000) return ms + ' ms';
    const s = Math.floor(ms / 1000);
    if (s < 120) return s + ' s';
    if (s < 7200) return Math.floor(s / 60) + ' min';
    if (s < 172800) return Math.floor(s / 3600) + ' h';
    return Math.floor(s / 86400) + ' d';
  };

  ns.rate = function (r) {
    if (r === null || r === undefined) return '–';
    return (r >= 100 ? r.toFixed(0) : r.toFixed(1)) + '/s';
  };

  ns.time = function (ms) {
    return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  };

  // A small line chart of one or more series (arrays of numbers) sharing a y scale.
  ns.chart = function (series, width, height, attrs) {
    const all = series.flatMap((s) => s.values);
    const max = Math.max(1, ...all);
    const length = Math.max(2, ...series.map((s) => s.values.length));
    const node = ns.svg('svg', Object.assign({
      class: 'chart', width: width, height: height,
      viewBox: '0 0 ' + width + ' ' + height, role: 'img',
    }, attrs || {}));
    for (const s of series) {
      const points = s.values.map((v, i) => {
        const x = (i / (length - 1)) * (width - 2) + 1;
        const y = height - 1 - (v / max) * (height - 2);
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      if (points.length === 1) points.push(points[0]);
      node.appendChild(ns.svg('polyline', { class: 'series ' + s.class, points: points.join(' ') }));
    }
    node.appendChild(ns.svg('title', {}, 'max ' + max));
    return node;
  };

  // A table from a header row and rows of cells (nodes or text).
  ns.table = function (attrs, header, rows) {
    return ns.el('table', attrs,
      ns.el('thead', {}, ns.el('tr', {}, header.map((h) => ns.el('th', {}, h)))),
      ns.el('tbody', {}, rows));
  };
})(window.hopmq);
