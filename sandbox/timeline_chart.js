// Draws #chart (SVG) from the JSON in #timeline-data; inlined by sandbox/html_report.py.
// No library and no network: plain DOM + SVG.
(function () {
  var d = JSON.parse(document.getElementById('timeline-data').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var W = 1100, H = 420, L = 84, R = 20, T = 16, B = 88;
  var pw = W - L - R, ph = H - T - B;
  var tmax = Math.max(d.drain_end, 1e-3);
  var lats = d.deliveries.map(function (p) { return Math.max(p[1], 1e-4); });
  var lmin = 1e-4, lmax = Math.max(1.0, Math.max.apply(null, lats.concat([1e-3])) * 1.2);
  function x(t) { return L + pw * Math.max(0, Math.min(t, tmax)) / tmax; }
  function y(s) {
    var a = Math.log10(lmin), b = Math.log10(lmax);
    return T + ph * (1 - (Math.log10(Math.max(s, lmin)) - a) / (b - a));
  }
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    (parent || svg).appendChild(e);
    return e;
  }
  function title(e, text) { el('title', {}, e).textContent = text; return e; }
  var svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('id', 'timeline'); svg.setAttribute('width', W); svg.setAttribute('height', H);
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  document.getElementById('chart').appendChild(svg);
  // phases
  var phases = el('g', {'class': 'phases'});
  title(el('rect', {'class': 'phase send', x: x(d.send_start), y: T, width: x(d.send_end) - x(d.send_start),
                    height: ph, fill: '#f3f7ff'}, phases), 'sending (faults on)');
  title(el('rect', {'class': 'phase drain', x: x(d.send_end), y: T, width: x(d.drain_end) - x(d.send_end),
                    height: ph, fill: '#f4f4f4'}, phases), 'drain (network healed)');
  // faults
  var fg = el('g', {'class': 'faults'});
  d.faults.forEach(function (f) {
    var who = f.connection < 0 ? 'every connection' : 'connection ' + f.connection;
    if (f.end !== null) {
      title(el('rect', {'class': 'fault-window ' + f.fault, x: x(f.start), y: T,
                        width: Math.max(1, x(f.end) - x(f.start)), height: ph,
                        fill: f.connection < 0 ? '#d9534f' : '#f0ad4e', 'fill-opacity': f.connection < 0 ? 0.18 : 0.10}, fg),
            f.fault + ' ' + who + ' ' + f.start.toFixed(2) + '–' + f.end.toFixed(2) + ' s');
    } else {
      title(el('line', {'class': 'fault-instant ' + f.fault, x1: x(f.start), x2: x(f.start), y1: T, y2: T + 8,
                        stroke: '#8a5a00', 'stroke-width': 1}, fg), f.fault + ' ' + who + ' at ' + f.start.toFixed(2) + ' s');
    }
  });
  // axes
  var ax = el('g', {'class': 'axis'});
  el('line', {x1: L, x2: L + pw, y1: T + ph, y2: T + ph}, ax);
  el('line', {x1: L, x2: L, y1: T, y2: T + ph}, ax);
  var step = Math.pow(10, Math.floor(Math.log10(tmax / 5 || 1)));
  if (tmax / step > 12) { step *= 5; } else if (tmax / step > 6) { step *= 2; }
  for (var t = 0; t <= tmax + 1e-9; t += step) {
    el('line', {x1: x(t), x2: x(t), y1: T + ph, y2: T + ph + 4}, ax);
    el('text', {x: x(t), y: T + ph + 16, 'text-anchor': 'middle'}, ax).textContent = (+t.toFixed(3)) + ' s';
  }
  [1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100].forEach(function (v) {
    if (v < lmin || v > lmax) { return; }
    el('line', {x1: L - 4, x2: L, y1: y(v), y2: y(v)}, ax);
    el('line', {x1: L, x2: L + pw, y1: y(v), y2: y(v), stroke: '#eee'}, ax);
    el('text', {x: L - 6, y: y(v) + 4, 'text-anchor': 'end'}, ax).textContent = v < 1 ? (v * 1000) + ' ms' : v + ' s';
  });
  el('text', {x: 16, y: T + ph / 2, transform: 'rotate(-90 16 ' + (T + ph / 2) + ')', 'text-anchor': 'middle'}, ax)
    .textContent = 'delivery latency';
  // deliveries
  var dg = el('g', {'class': 'deliveries', fill: '#2b6cb0', 'fill-opacity': 0.55});
  d.deliveries.forEach(function (p) { el('circle', {'class': 'delivery', cx: x(p[0]), cy: y(p[1]), r: 1.8}, dg); });
  // connection events, in a lane under the plot
  var lane = T + ph + 30, eg = el('g', {'class': 'events'});
  var colour = {resume: '#17803d', new_session: '#e07b00', session_lost: '#c0262d', disconnect: '#999'};
  d.events.forEach(function (e) {
    var dy = e[2] === 'disconnect' ? 0 : (e[2] === 'resume' ? 10 : 20);
    title(el('rect', {'class': 'event ' + e[2], x: x(e[0]) - 1, y: lane + dy, width: 2, height: 8,
                      fill: colour[e[2]]}, eg), e[2].replace('_', ' ') + ': client ' + e[1] + ' at ' + e[0].toFixed(2) + ' s');
  });
  el('text', {x: L - 6, y: lane + 7, 'text-anchor': 'end', 'font-size': 10, fill: '#555'}, eg).textContent = 'disconnects';
  el('text', {x: L - 6, y: lane + 17, 'text-anchor': 'end', 'font-size': 10, fill: '#555'}, eg).textContent = 'resumes';
  el('text', {x: L - 6, y: lane + 27, 'text-anchor': 'end', 'font-size': 10, fill: '#555'}, eg).textContent = 'sessions';
  // missing deliveries
  var lg = el('g', {'class': 'losses'});
  d.losses.forEach(function (m) {
    var cx = x(m[0]), cy = T + 14, c = m[4] ? '#c0262d' : '#e07b00';
    var g = title(el('g', {'class': 'loss ' + (m[4] ? 'silent' : 'reported')}, lg),
                  (m[4] ? 'LOST SILENTLY: ' : 'lost with a reported session loss: ') + m[1] + '/' + m[2] + ' → ' + m[3]);
    el('line', {x1: cx - 4, x2: cx + 4, y1: cy - 4, y2: cy + 4, stroke: c, 'stroke-width': 2}, g);
    el('line', {x1: cx - 4, x2: cx + 4, y1: cy + 4, y2: cy - 4, stroke: c, 'stroke-width': 2}, g);
  });
  document.getElementById('chart').setAttribute('data-drawn', d.deliveries.length + ' deliveries');
})();
