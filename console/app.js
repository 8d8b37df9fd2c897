// gatehouse console: one script, no framework, no build step. Every value
// from the server is put in the page as text (textContent), never as HTML.
'use strict';

(function () {
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  let me = null; // {name, roles, csrf}
  let cleanup = []; // what the current view must stop when left

  // ---- helpers -------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      if (me && me.csrf) headers['X-CSRF-Token'] = me.csrf;
    }
    const res = await fetch(path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
    if (res.status === 401 && path !== '/console/login' && path !== '/console/me') { me = null; showSignIn('Your sign-in has ended.'); }
    return { status: res.status, ok: res.ok, data };
  }

  const has = (...roles) => me && me.roles.some((r) => roles.includes(r));
  const canApprove = () => me && (me.roles.includes('admin') || me.roles.some((r) => r !== 'auditor'));
  const canAudit = () => has('admin', 'auditor');
  const isAdmin = () => has('admin');

  function ago(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs < 60) return secs + ' s';
    if (secs < 3600) return Math.floor(secs / 60) + ' min ' + (secs % 60) + ' s';
    return Math.floor(secs / 3600) + ' h ' + Math.floor((secs % 3600) / 60) + ' min';
  }
  const when = (unixSecs) => new Date(unixSecs * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const whenUs = (us) => when(us / 1e6);
  const nowSecs = () => Date.now() / 1000;

  // SQL shown for review: keywords and numbers marked, nothing else. No
  // string or comment is coloured, so no quoting trick (E'\'', $$, "'",
  // MySQL's executable /*! */) can make a statement look like a literal
  // or a comment; characters that hide or reorder text (bidirectional
  // controls, zero-width ones) are shown as their code.
  const KEYWORDS = new Set(('select from where insert into values update set delete create drop alter table index ' +
    'truncate grant revoke and or not null is in like join left right inner outer on as order by group having limit ' +
    'offset returning with union all distinct case when then else end begin commit rollback copy explain analyze ' +
    'call do execute prepare if exists primary key references default cascade view function procedure').split(' '));
  const HIDDEN = /[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/;
  function sql(text) {
    const pre = el('pre', { class: 'sql' });
    const re = /(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_$]*)|([\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff])|([^A-Za-z0-9_\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]+|.)/g;
    let m;
    while ((m = re.exec(text || '')) !== null) {
      if (m[1]) pre.append(el('span', { class: 'num', text: m[1] }));
      else if (m[2] && KEYWORDS.has(m[2].toLowerCase())) pre.append(el('span', { class: 'kw', text: m[2] }));
      else if (m[3]) pre.append(el('span', { class: 'hidden-char', title: 'an invisible or reordering character',
        text: '<U+' + m[3].codePointAt(0).toString(16).toUpperCase().padStart(4, '0') + '>' }));
      else pre.append(document.createTextNode(m[0]));
    }
    if (HIDDEN.test(text || '')) pre.classList.add('has-hidden');
    return pre;
  }

  const sameName = (a, b) => String(a).trim().toLowerCase() === String(b).trim().toLowerCase();
  // Whether I could decide this review: admin, or the approver role and
  // one of the review's approver roles (the server checks again).
  const mayDecide = (r) => me && (me.roles.includes('admin') ||
    (me.roles.includes('approver') && me.roles.some((x) => (r.approvers || []).includes(x))));

  function stateName(status) { return (status && status.state) || 'pending'; }
  function badge(state) { return el('span', { class: 'badge state-' + state, text: state }); }

  function view(title, ...children) {
    main.replaceChildren(el('h1', { text: title }), ...children);
    main.focus({ preventScroll: true });
  }

  // ---- sign-in and navigation ----------------------------------------------

  function showSignIn(message) {
    stopView();
    nav.replaceChildren();
    who.replaceChildren();
    const status = el('p', { class: 'status error', role: 'alert', text: message || '' });
    const input = el('input', { id: 'token', type: 'password', autocomplete: 'off', required: true });
    const form = el('form', { class: 'signin', id: 'signin' },
      el('label', { for: 'token' }, 'Admin token (or an admin-audience JWT)', input),
      el('button', { type: 'submit', class: 'primary', text: 'Sign in' }),
      status);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await api('POST', '/console/login', { token: input.value });
      input.value = '';
      if (r.ok) { me = r.data; start(); } else { status.textContent = (r.data && r.data.error) || 'Sign-in failed.'; }
    });
    view('Sign in', form);
    input.focus();
    // Single sign-on, when the gateway has a provider for people.
    api('GET', '/console/sign-in-methods').then((r) => {
      if (r.ok && r.data && r.data.sso) {
        main.insertBefore(el('p', {}, el('a', { href: '/console/oidc/start', id: 'sso', class: 'button', text: 'Sign in with single sign-on' })), form);
      }
    });
  }

  const PAGES = [
    ['#/reviews', 'Reviews', () => true],
    ['#/sessions', 'Live sessions', canAudit],
    ['#/recordings', 'Recordings', canAudit],
    ['#/audit', 'Audit log', canAudit],
    ['#/overview', 'Overview', canAudit],
  ];

  function drawNav() {
    const here = location.hash.split('/').slice(0, 2).join('/') || '#/reviews';
    nav.replaceChildren(...PAGES.filter((p) => p[2]()).map(([href, name]) =>
      el('a', { href, text: name, 'aria-current': href === here ? 'page' : null })));
    const out = el('button', { type: 'button', id: 'signout', text: 'Sign out' });
    out.addEventListener('click', async () => { await api('POST', '/console/logout'); me = null; showSignIn('Signed out.'); });
    who.replaceChildren(el('span', { text: me.name + ' (' + me.roles.join(', ') + ')' }), out);
  }

  function stopView() { for (const f of cleanup) f(); cleanup = []; }

  function route() {
    if (!me) return;
    stopView();
    drawNav();
    const parts = (location.hash || '#/reviews').slice(2).split('/');
    const page = parts[0] || 'reviews';
    if (page === 'reviews') return reviewsView();
    if (!canAudit()) return view('Not for your roles', el('p', { text: 'This page needs the auditor or admin role.' }));
    if (page === 'sessions') return sessionsView();
    if (page === 'recordings' && parts[1]) {
      let id = null;
      try { id = decodeURIComponent(parts[1]); } catch (_) { /* a malformed link */ }
      if (id !== null) return recordingView(id);
      return view('Not found', el('p', { text: 'This is not a recording id.' }));
    }
    if (page === 'recordings') return recordingsView();
    if (page === 'audit') return auditView();
    if (page === 'overview') return overviewView();
    view('Not found', el('p', { text: 'No such page.' }));
  }

  async function start() {
    if (!me) {
      const r = await api('GET', '/console/me');
      if (!r.ok) return showSignIn();
      me = r.data;
    }
    if (!location.hash || location.hash === '#/') location.hash = canApprove() ? '#/reviews' : '#/recordings';
    route();
  }

  window.addEventListener('hashchange', route);

  // ---- reviews inbox -----------------------------------------------------------

  function reviewCard(r, all, now) {
    const q = r; // the review's request is flattened into it
    const state = stateName(r.status);
    const left = r.created + q.timeout_secs - now;
    const card = el('article', { class: 'card review', 'data-id': r.id, 'aria-label': 'review ' + r.id });
    card.append(el('header', {},
      el('strong', { text: r.id }), badge(state),
      el('span', { class: 'muted', text: state === 'pending'
        ? 'waiting ' + ago(now - r.created) + ', ' + (left > 0 ? ago(left) + ' left' : 'expiring')
        : 'opened ' + when(r.created) })));
    card.append(el('div', { class: 'meta' },
      el('span', {}, 'identity ', el('b', { text: q.identity })),
      el('span', {}, 'target ', el('b', { text: q.target })),
      el('span', {}, 'class ', el('b', { text: q.class })),
      q.flags && q.flags.length ? el('span', {}, 'flags ', el('b', { text: q.flags.join(', ') })) : null,
      el('span', { text: 'session ' + q.session }),
      el('span', { class: 'approvals', text: r.approvals.length + ' of ' + q.required + ' approvals' +
        (r.approvals.length ? ' (' + r.approvals.map((a) => a.by).join(', ') + ')' : '') +
        ' from ' + q.approvers.join(', ') })));
    if (q.reason) card.append(el('p', { text: 'Held because: ' + q.reason }));
    card.append(sql(q.sql));
    if (r.sql_cut) {
      const more = el('button', { type: 'button', class: 'whole', text: 'Show the whole statement (' + r.sql_cut + ' more characters)' });
      more.addEventListener('click', async () => {
        const full = await api('GET', '/api/v1/reviews/' + encodeURIComponent(r.id));
        if (full.ok) { card.querySelector('pre.sql').replaceWith(sql(full.data.sql)); more.remove(); }
      });
      card.append(more);
    }
    if (q.params && q.params.length) {
      card.append(el('p', { class: 'muted', text: 'Parameters (secrets masked):' }),
        el('ol', { class: 'params' }, q.params.map((p) => el('li', {}, el('code', { text: p })))));
    }
    const earlier = all.filter((o) => o.id !== r.id && o.fingerprint === r.fingerprint && stateName(o.status) !== 'pending');
    if (earlier.length) {
      card.append(el('details', {}, el('summary', { text: earlier.length + ' earlier decision(s) on this statement shape' }),
        el('ul', {}, earlier.slice(0, 10).map((o) => el('li', { text: o.id + ': ' + stateName(o.status) +
          (o.decided_by ? ' by ' + o.decided_by : '') + (o.status.reason ? ' (' + o.status.reason + ')' : '') +
          ', ' + when(o.created) })))));
    }
    if (state === 'denied') card.append(el('p', { class: 'error', text: 'Denied by ' + r.decided_by + ': ' + r.status.reason }));
    if (state === 'approved') card.append(el('p', { text: 'Approved by ' + r.decided_by +
      (r.grant_until ? '; the class is granted until ' + when(r.grant_until) : '') }));
    if (state === 'withdrawn') card.append(el('p', { class: 'muted', text: 'Withdrawn: ' + r.status.why }));
    if (state === 'pending' && canApprove()) {
      if (sameName(q.identity, me.name)) {
        card.append(el('p', { class: 'muted', text: 'You asked for this review: someone else decides it.' }));
      } else if (!mayDecide(r)) {
        card.append(el('p', { class: 'muted', text: 'This review needs an approver with one of the roles: ' + q.approvers.join(', ') + '.' }));
      } else if (!r.approvals.some((a) => sameName(a.by, me.name))) {
        card.append(decisionForm(r));
      } else {
        card.append(el('p', { class: 'muted', text: 'You approved; waiting for other approvers.' }));
      }
    }
    return card;
  }

  function decisionForm(r) {
    const status = el('p', { class: 'status', role: 'status' });
    const grantId = 'grant-' + r.id;
    const reasonId = 'reason-' + r.id;
    // A grant gives what the review names (its class, or `budget`: the
    // identity's budget lifted), to the identity on the target.
    const what = (r.grants && r.grants.length ? r.grants : [r.class])
      .map((g) => g === 'budget' ? 'no budget limit' : g).join(' + ');
    const grant = el('select', { id: grantId, class: 'grant' },
      el('option', { value: '0', text: 'this statement once' }),
      el('option', { value: '15', text: what + ' for 15 min' }),
      el('option', { value: '60', text: what + ' for 1 h' }),
      el('option', { value: '240', text: what + ' for 4 h' }));
    const reason = el('input', { id: reasonId, class: 'reason', type: 'text', maxlength: '1000', placeholder: 'told to the client on a denial' });
    const decide = async (verb) => {
      const body = { reason: reason.value };
      if (verb === 'approve') body.grant_minutes = Number(grant.value);
      status.textContent = 'Sending…';
      const res = await api('POST', '/api/v1/reviews/' + encodeURIComponent(r.id) + '/' + verb, body);
      status.className = 'status' + (res.ok ? '' : ' error');
      status.textContent = res.ok ? (verb === 'approve' ? 'Approval recorded.' : 'Denied.') : ((res.data && res.data.error) || 'Refused.');
    };
    return el('div', { class: 'actions' },
      el('label', { for: grantId }, 'Approve for', grant),
      el('button', { type: 'button', class: 'approve', onclick: () => decide('approve'), text: 'Approve' }),
      el('label', { for: reasonId }, 'Reason', reason),
      el('button', { type: 'button', class: 'deny', onclick: () => decide('deny'), text: 'Deny' }),
      status);
  }

  function reviewsView() {
    const pending = el('section', { id: 'pending', 'aria-live': 'polite' });
    const done = el('section', { id: 'finished' });
    const conn = el('p', { class: 'muted', text: 'Connecting…' });
    view('Reviews', conn, el('h2', { text: 'Waiting' }), pending, el('h2', { text: 'Decided' }), done);
    let latest = null;
    const draw = () => {
      if (!latest) return;
      const now = nowSecs();
      const all = latest.reviews;
      const open = all.filter((r) => stateName(r.status) === 'pending');
      const finished = all.filter((r) => stateName(r.status) !== 'pending');
      // Keep what the user is typing: only redraw cards whose data changed.
      syncCards(pending, open, all, now);
      syncCards(done, finished.slice(0, 50), all, now);
      if (!open.length) pending.replaceChildren(el('p', { class: 'muted', text: 'Nothing is waiting.' }));
    };
    let es = null;
    let retry = null;
    const connect = () => {
      es = new EventSource('/api/v1/reviews/events');
      es.addEventListener('reviews', (ev) => {
        latest = JSON.parse(ev.data);
        conn.textContent = 'Live.' + (latest.open > latest.reviews.filter((r) => stateName(r.status) === 'pending').length
          ? ' Showing the oldest ' + latest.reviews.filter((r) => stateName(r.status) === 'pending').length + ' of ' + latest.open + ' waiting.' : '');
        draw();
      });
      es.onerror = async () => {
        conn.textContent = 'Reconnecting…';
        if (es.readyState === EventSource.CLOSED) {
          // A refused stream is not retried by the browser: find out why
          // (a sign-in that ended shows the sign-in page) and try again.
          const r = await api('GET', '/console/me');
          if (r.ok) retry = setTimeout(connect, 2000);
        }
      };
    };
    connect();
    const tick = setInterval(() => {
      for (const c of pending.querySelectorAll('article.review')) {
        const r = latest && latest.reviews.find((x) => x.id === c.dataset.id);
        const span = c.querySelector('header .muted');
        if (r && span) {
          const left = r.created + r.timeout_secs - nowSecs();
          span.textContent = 'waiting ' + ago(nowSecs() - r.created) + ', ' + (left > 0 ? ago(left) + ' left' : 'expiring');
        }
      }
    }, 1000);
    cleanup.push(() => es && es.close(), () => clearTimeout(retry), () => clearInterval(tick));
  }

  function syncCards(container, list, all, now) {
    const keyOf = (r) => JSON.stringify([r.status, r.approvals, r.decided_by]);
    const existing = new Map([...container.querySelectorAll('article.review')].map((c) => [c.dataset.id, c]));
    const cards = list.map((r) => {
      const c = existing.get(r.id);
      if (c && c.dataset.key === keyOf(r)) return c;
      const fresh = reviewCard(r, all, now);
      fresh.dataset.key = keyOf(r);
      // Keep what the approver was typing or had picked.
      for (const sel of ['input.reason', 'select.grant']) {
        const before = c && c.querySelector(sel);
        const after = fresh.querySelector(sel);
        if (before && after) after.value = before.value;
      }
      return fresh;
    });
    if (cards.length !== container.children.length || cards.some((c, i) => container.children[i] !== c)) {
      container.replaceChildren(...cards);
    }
  }

  // ---- live sessions -------------------------------------------------------------

  function sessionsView() {
    const body = el('tbody');
    const status = el('p', { class: 'status', role: 'status' });
    view('Live sessions', status, el('table', {},
      el('thead', {}, el('tr', {}, ['Session', 'Identity', 'Target', 'Client', 'Since', 'Statements', 'Rows', 'Held', ''].map((h) => el('th', { text: h })))),
      body));
    const load = async () => {
      const s = await api('GET', '/api/v1/sessions');
      if (!s.ok) { status.textContent = (s.data && s.data.error) || 'Cannot list sessions.'; return; }
      const now = nowSecs();
      body.replaceChildren(...s.data.sessions.map((x) => {
        const h = x.held;
        const reason = el('input', { type: 'text', class: 'kill-reason', 'aria-label': 'reason to kill session ' + x.id, placeholder: 'reason' });
        const kill = el('button', { type: 'button', class: 'kill', text: 'Kill' });
        kill.addEventListener('click', async () => {
          // In a fleet, the instance that has the session does the kill.
          const at = x.instance ? '?instance=' + encodeURIComponent(x.instance) : '';
          const r = await api('POST', '/api/v1/sessions/' + encodeURIComponent(x.id) + '/kill' + at, { reason: reason.value });
          status.textContent = r.ok ? 'Session ' + x.id + ' killed.' : ((r.data && r.data.error) || 'Refused.');
          load();
        });
        return el('tr', { 'data-session': x.id },
          el('td', { text: x.instance ? x.id + ' @ ' + x.instance : x.id }), el('td', { text: x.identity }), el('td', { text: x.target }),
          el('td', { text: x.client_addr + (x.client_tls ? ' (TLS)' : '') }),
          el('td', { text: when(x.started) + ' (' + ago(now - x.started) + ')' }),
          el('td', { text: x.statements }), el('td', { text: x.rows }),
          el('td', {}, h ? el('a', { href: '#/reviews', text: h.review + ' (' + h.class + ')' }) : ''),
          el('td', {}, isAdmin() ? [reason, ' ', kill] : ''));
      }));
      if (!s.data.sessions.length) body.replaceChildren(el('tr', {}, el('td', { colspan: '9', class: 'muted', text: 'No session is open.' })));
    };
    load();
    const t = setInterval(load, 2000);
    cleanup.push(() => clearInterval(t));
  }

  // ---- recordings ------------------------------------------------------------------

  function recordingsView() {
    const params = new URLSearchParams(location.hash.split('?')[1] || '');
    const field = (name, label, type) => {
      const input = el('input', { id: 'f-' + name, name, type: type || 'text', value: params.get(name) || '' });
      return el('label', { for: 'f-' + name }, label, input);
    };
    const decision = el('select', { id: 'f-decision', name: 'decision' },
      ['', 'allow', 'deny', 'approved'].map((d) => el('option', { value: d, text: d || 'any', selected: params.get('decision') === d })));
    const form = el('form', { class: 'search', id: 'search' },
      field('identity', 'Identity'), field('target', 'Target'), field('since', 'Since (YYYY-MM-DDTHH:MM:SSZ)'),
      field('until', 'Until'), field('text', 'Statement text'),
      el('label', { for: 'f-decision' }, 'Decision', decision),
      el('button', { type: 'submit', class: 'primary', text: 'Search' }));
    const body = el('tbody');
    const status = el('p', { class: 'status', role: 'status' });
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
      location.hash = '#/recordings?' + q.toString();
    });
    view('Recordings', form, status, el('table', {},
      el('thead', {}, el('tr', {}, ['Started', 'Identity', 'Target', 'Client', 'Statements', 'Decisions', 'End'].map((h) => el('th', { text: h })))),
      body));
    (async () => {
      const q = new URLSearchParams(params);
      q.set('limit', '100');
      const r = await api('GET', '/api/v1/recordings?' + q.toString());
      if (!r.ok) { status.textContent = (r.data && r.data.error) || 'Cannot list recordings.'; return; }
      status.textContent = r.data.total + ' recording(s)';
      body.replaceChildren(...r.data.recordings.map((x) => el('tr', {},
        el('td', {}, el('a', { href: '#/recordings/' + encodeURIComponent(x.id), text: whenUs(x.started_us) })),
        el('td', { text: x.identity }), el('td', { text: x.target }), el('td', { text: x.client }),
        el('td', { text: x.statements }), el('td', { text: JSON.stringify(x.decisions || {}) }),
        el('td', { text: x.live ? 'live' : (x.end || '') }))));
    })();
  }

  function describeRecord(v) {
    switch (v.kind) {
      case 'open': return ['open', v.identity + ' → ' + v.target + ' as ' + v.account + ' from ' + v.client];
      case 'statement': return ['statement', null];
      case 'result': return [v.error ? 'error' : 'result', v.error ? 'error ' + v.error.code + ': ' + v.error.message
        : (v.tag || '') + (v.rows !== undefined ? ' · ' + v.rows + ' row(s)' : '') +
          (v.duration_us !== undefined ? ' · ' + (v.duration_us / 1000).toFixed(2) + ' ms' : '') +
          (v.masked && Object.keys(v.masked).length ? ' · masked ' + JSON.stringify(v.masked) : '') +
          (v.skipped ? 'skipped' : '')];
      case 'rows': return ['rows', null];
      case 'review': return ['review', 'review ' + v.review + ': ' + v.outcome + (v.reason ? ' (' + v.reason + ')' : '') +
        (v.approvers && v.approvers.length ? ' by ' + v.approvers.join(', ') : '')];
      case 'notice': return ['notice', v.severity + ' ' + v.code + ': ' + v.message];
      case 'notification': return ['notice', 'notification on ' + v.channel + ': ' + v.payload];
      case 'gap': return ['gap', v.rows + ' row(s) not recorded: ' + v.why];
      case 'close': return ['close', 'closed: ' + v.end + ' · ' + v.statements + ' statement(s), ' + v.rows + ' row(s)'];
      case 'seal': return ['seal', 'sealed: ' + v.records + ' records'];
      default: return [v.kind, JSON.stringify(v)];
    }
  }

  function recordItem(v) {
    const [kind, text] = describeRecord(v);
    const li = el('li', { class: 'kind-' + kind, 'data-seq': v.seq, 'data-kind': v.kind });
    li.append(el('span', { class: 't', text: whenUs(v.t) }));
    if (v.kind === 'statement') {
      li.append(el('strong', { text: '#' + v.n + ' ' + v.class + ' · ' + v.decision }));
      li.append(sql(v.sql));
      if (v.params && v.params.length) li.append(el('p', { class: 'muted', text: 'parameters: ' + v.params.map((p) => p === null ? 'NULL' : p).join(', ') }));
      if (v.review) li.append(el('p', { text: 'held: review ' + v.review.review + ' ' + v.review.outcome }));
      if (v.error) li.append(el('p', { class: 'error', text: v.error.code + ': ' + v.error.message }));
    } else if (v.kind === 'rows') {
      li.append(el('table', { class: 'rows' }, el('tbody', {}, (v.rows || []).slice(0, 50).map((row) =>
        el('tr', {}, row.map((c) => el('td', { text: c === null ? 'NULL' : String(c) })))))));
    } else {
      li.append(el('span', { text: text }));
    }
    return li;
  }

  async function recordingView(id) {
    const info = el('div');
    const list = el('ol', { class: 'timeline', id: 'timeline' });
    const play = el('button', { type: 'button', id: 'play', text: 'Play' });
    const speed = el('select', { id: 'speed', 'aria-label': 'speed' }, ['1', '2', '5', '10', '50'].map((s) => el('option', { value: s, text: s + '×' })));
    const pos = el('span', { id: 'position', class: 'muted' });
    const all = el('button', { type: 'button', id: 'show-all', text: 'Show all' });
    const enc = encodeURIComponent(id);
    const downloads = el('p', {}, 'Download: ',
      el('a', { href: '/api/v1/recordings/' + enc + '/events?format=jsonl', download: id + '.jsonl', text: 'JSON lines' }), ' · ',
      el('a', { href: '/api/v1/recordings/' + enc + '/events?format=csv', download: id + '.csv', text: 'CSV' }), ' · ',
      el('a', { href: '/api/v1/recordings/' + enc + '/events?format=text', download: id + '.txt', text: 'transcript' }));
    view('Recording ' + id, el('p', {}, el('a', { href: '#/recordings', text: '← all recordings' })), info, downloads,
      el('div', { class: 'player' }, play, el('label', {}, 'Speed ', speed), all, pos), list);
    const d = await api('GET', '/api/v1/recordings/' + enc);
    if (!d.ok) { info.replaceChildren(el('p', { class: 'error', text: (d.data && d.data.error) || 'Cannot read it.' })); return; }
    const v = d.data.verified || {};
    info.replaceChildren(el('div', { class: 'meta' },
      el('span', {}, 'identity ', el('b', { text: d.data.identity })),
      el('span', {}, 'target ', el('b', { text: d.data.target })),
      el('span', { text: 'started ' + whenUs(d.data.started_us) }),
      el('span', { text: 'ended: ' + (d.data.live ? 'live' : d.data.end) }),
      el('span', { id: 'verified', class: v.intact ? 'verified-ok' : 'verified-bad',
        text: v.intact ? ('chain intact' + (v.sealed ? ', sealed' : ', not sealed') + (v.signed_by ? ', signed by ' + v.signed_by : ''))
          : ('chain broken' + (v.broken ? ' at record ' + v.broken.record + ': ' + v.broken.why : '')) })));
    const res = await fetch('/api/v1/recordings/' + enc + '/events?format=jsonl', { credentials: 'same-origin' });
    if (!res.ok) { list.replaceChildren(el('li', { class: 'error', text: 'Cannot read the records (' + res.status + ').' })); return; }
    const lines = (await res.text()).split('\n').filter(Boolean);
    const records = [];
    for (const l of lines) { try { records.push(JSON.parse(l)); } catch (_) { /* a torn line */ } }
    const items = records.map(recordItem);
    list.replaceChildren(...items);
    // Replay: records appear at their recorded pace (long pauses shortened
    // to 2 s), from the first; a statement clicked jumps there.
    let at = 0;
    let timer = null;
    const show = (n) => {
      at = Math.max(0, Math.min(n, items.length));
      items.forEach((li, i) => { li.classList.toggle('future', i >= at); li.classList.toggle('current', i === at - 1); });
      pos.textContent = at + ' / ' + items.length + ' records';
    };
    const stop = () => { if (timer) clearTimeout(timer); timer = null; play.textContent = at >= items.length ? 'Replay' : 'Play'; };
    const step = () => {
      if (at >= items.length) return stop();
      show(at + 1);
      const gapUs = at < records.length ? records[at].t - records[at - 1].t : 0;
      timer = setTimeout(step, Math.min(2000, Math.max(0, gapUs / 1000)) / Number(speed.value));
    };
    play.addEventListener('click', () => {
      if (timer) return stop();
      if (at >= items.length) show(0);
      play.textContent = 'Pause';
      step();
    });
    all.addEventListener('click', () => { stop(); show(items.length); });
    items.forEach((li, i) => {
      if (records[i].kind === 'statement') {
        li.tabIndex = 0;
        li.title = 'Jump here';
        const jump = () => { stop(); show(i + 1); };
        li.addEventListener('click', jump);
        li.addEventListener('keydown', (e) => { if (e.key === 'Enter') jump(); });
      }
    });
    show(items.length);
    cleanup.push(stop);
  }

  // ---- audit log and overview --------------------------------------------------------

  function auditView() {
    const filter = el('input', { id: 'audit-filter', type: 'search', placeholder: 'filter' });
    const body = el('tbody');
    const status = el('p', { class: 'status', role: 'status' });
    view('Audit log', el('label', { for: 'audit-filter' }, 'Filter ', filter), status, el('table', {},
      el('thead', {}, el('tr', {}, ['Time', 'Kind', 'Who', 'Action', 'Object', 'Outcome'].map((h) => el('th', { text: h })))), body));
    let rows = [];
    const draw = () => {
      const f = filter.value.toLowerCase();
      body.replaceChildren(...rows.filter((tr) => !f || tr.textContent.toLowerCase().includes(f)));
    };
    filter.addEventListener('input', draw);
    (async () => {
      const res = await fetch('/api/v1/audit?format=jsonl', { credentials: 'same-origin' });
      if (res.status === 401) { me = null; showSignIn('Your sign-in has ended.'); return; }
      if (!res.ok) { status.textContent = 'Cannot read the audit log (' + res.status + ').'; return; }
      const recs = (await res.text()).split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch (_) { return null; } }).filter(Boolean);
      rows = recs.reverse().slice(0, 2000).map((v) => el('tr', {},
        el('td', { text: whenUs(v.t) }), el('td', { text: v.kind }), el('td', { text: v.who || '' }),
        el('td', { text: v.action || '' }), el('td', { text: v.object || v.file || '' }),
        el('td', { text: v.outcome || v.why || '' })));
      status.textContent = recs.length + ' record(s), newest first';
      draw();
    })();
  }

  function overviewView() {
    const stats = el('div', { class: 'stats' });
    const classes = el('tbody');
    const masked = el('tbody');
    view('Overview', stats,
      el('h2', { text: 'Statements by class and decision (recorded sessions)' }),
      el('table', {}, el('thead', {}, el('tr', {}, ['Class', 'Decision', 'Per second', 'Since start'].map((h) => el('th', { text: h })))), classes),
      el('h2', { text: 'Masked values by rule' }),
      el('table', {}, el('thead', {}, el('tr', {}, el('th', { text: 'Rule' }), el('th', { text: 'Values' }))), masked));
    // Rates are differences between two reads of the counters.
    let prev = null;
    const load = async () => {
      const r = await api('GET', '/api/v1/overview');
      if (!r.ok) return;
      const o = r.data;
      const rows = o.statements_by_class || [];
      const counts = new Map(rows.map((x) => [x.class + '/' + x.decision, x.count]));
      const total = rows.reduce((a, x) => a + x.count, 0);
      const secs = prev ? (Date.now() - prev.at) / 1000 : 0;
      const rate = (now, before) => (prev && secs > 0 ? ((now - before) / secs).toFixed(1) : '–');
      const stat = (label, value, id) => el('div', { class: 'stat', id }, el('b', { text: value }), label);
      stats.replaceChildren(
        stat('sessions open', o.sessions_active, 'stat-sessions'),
        stat('statements per second (recorded)', rate(total, prev ? prev.total : 0), 'stat-rate'),
        stat('holds waiting', o.reviews_pending, 'stat-holds'),
        stat('recorder backlog', o.recorder_backlog === null ? 'not recording' : o.recorder_backlog, 'stat-backlog'),
        stat('statements (closed sessions)', o.statements, 'stat-statements'));
      classes.replaceChildren(...rows.map((x) => {
        const key = x.class + '/' + x.decision;
        return el('tr', {}, el('td', { text: x.class }), el('td', { text: x.decision }),
          el('td', { text: rate(x.count, prev ? (prev.counts.get(key) || 0) : 0) }), el('td', { text: x.count }));
      }));
      masked.replaceChildren(...Object.entries(o.masked_by_rule || {}).sort((a, b) => b[1] - a[1]).map(([k, v]) =>
        el('tr', {}, el('td', { text: k }), el('td', { text: v }))));
      prev = { at: Date.now(), total, counts };
    };
    load();
    const t = setInterval(load, 2000);
    cleanup.push(() => clearInterval(t));
  }

  start();
})();
