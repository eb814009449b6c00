// The supervisors' live response board: signs in, watches the board (snapshot, then deltas) and
// renders it; figures are defined in docs/metrics.md. Clicking a figure lists the petitions behind it.

import { Connection, ServerError, homeOf } from './lianxin.js';
import { applyStrings, duration, lang, setLang, t } from './i18n.js';

const $ = (id) => document.getElementById(id);

/** Builds an element: el('td', { class: 'n' }, 'text', child). Text is never parsed as HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const state = {
  board: null, // the merged board
  watching: null, // { communityId, range }
  account: null,
};

const conn = new Connection({
  onStatus(s) {
    const status = $('status');
    status.dataset.state = s;
    status.dataset.i18n = s;
    status.textContent = t(s);
  },
  async onSignedIn(account) {
    state.account = account;
    $('sign-in').hidden = true;
    $('sign-out').hidden = false;
    await watch();
  },
  onSignedOut() {
    state.account = null;
    state.board = null;
    $('board').hidden = true;
    $('sign-out').hidden = true;
    $('sign-in').hidden = false;
  },
  onBoardUpdate(update) {
    if (!state.board) return;
    merge(state.board, update);
    render();
  },
});

// ------------------------------------------------------------------ board state

/** Merges an update: whole parts replaced, changed rows replace the rows with the same id. */
function merge(board, update) {
  for (const key of ['communities', 'grids', 'workers']) {
    const rows = board[key] || (board[key] = []);
    for (const row of update[key] || []) {
      const i = rows.findIndex((r) => r.id === row.id);
      if (i >= 0) rows[i] = row;
      else rows.push(row);
    }
  }
  for (const key of ['total', 'overdue', 'bucketCounts', 'bucketBoundsMs', 'fromMs', 'toMs', 'computedAtMs']) {
    board[key] = update[key];
  }
}

async function watch() {
  const isTownship = ['ROLE_TOWNSHIP_SUPERVISOR', 'ROLE_ADMIN'].includes(state.account?.role);
  $('community-pick').hidden = !isTownship;
  const communityId = isTownship ? $('community').value || '0' : '0';
  const range = $('range').value;
  try {
    const reply = await conn.request({ watchBoard: { communityId, range } });
    state.board = reply.board;
    state.watching = { communityId: reply.board.communityId || '0', range };
    $('board').hidden = false;
    $('sign-in-error').textContent = '';
    render();
  } catch (e) {
    if (e instanceof ServerError && e.code === 'ERROR_CODE_FORBIDDEN') {
      // Residents and grid staff have their own pages.
      if (homeOf(state.account) !== '/board') {
        location.replace(homeOf(state.account));
        return;
      }
      $('sign-in-error').textContent = t('notAllowed');
      await conn.signOut();
    }
  }
}

// ------------------------------------------------------------------ rendering

const num = (v) => v || 0;
const pct = (v) => (v === undefined || v === null ? t('none') : `${Math.round(v * 1000) / 10}%`);
const ms = (v, n) => (n ? duration(Number(v || 0)) : t('none'));

/** A clickable figure that lists the petitions behind it. */
function figure(value, level, id, fig, label) {
  return el(
    'button',
    { type: 'button', class: 'fig', dataset: { level, id, figure: fig }, title: label || '' },
    value,
  );
}

function render() {
  const b = state.board;
  if (!b) return;
  const total = b.total || {};
  const names = new Map((b.workers || []).map((w) => [w.id, w.name]));
  const communityRows = b.communities || [];
  $('scope-name').textContent =
    b.communityId && b.communityId !== '0'
      ? communityRows.find((c) => c.id === b.communityId)?.name || ''
      : t('township');
  fillCommunityPick(communityRows);

  // Key figures.
  const kpi = (key, value, fig) =>
    el('div', { class: 'kpi', dataset: { testid: `kpi-${key}` } },
      el('div', { class: 'kpi-label' }, t(key)),
      fig ? figure(value, 'BOARD_LEVEL_TOTAL', '0', fig, t(key)) : el('div', { class: 'kpi-value' }, value));
  $('kpis').replaceChildren(
    kpi('received', num(total.received), 'BOARD_FIGURE_RECEIVED'),
    kpi('open', num(total.open), 'BOARD_FIGURE_OPEN'),
    kpi('overdueResponse', num(total.overdueResponse), 'BOARD_FIGURE_OVERDUE_RESPONSE'),
    kpi('overdueCompletion', num(total.overdueCompletion), 'BOARD_FIGURE_OVERDUE_COMPLETION'),
    kpi('responseRate', pct(total.responseRate), 'BOARD_FIGURE_RESPONSE_DECIDED'),
    kpi('resolutionRate', pct(total.resolutionRate), 'BOARD_FIGURE_RESOLVED'),
    kpi('medianResponse', ms(total.firstResponseMedianMs, total.responded), 'BOARD_FIGURE_RESPONDED'),
  );

  // Overdue petitions, oldest first (the server's order).
  const now = Number(b.computedAtMs || Date.now());
  const overdue = b.overdue || [];
  $('overdue').replaceChildren(
    ...(overdue.length
      ? overdue.map((p) =>
          el('li', { dataset: { petitionId: p.id } },
            el('span', { class: 'age' }, duration(now - Number(p.createdAtMs))),
            el('span', { class: 'title' }, `#${p.id} ${p.title || ''}`),
            el('span', { class: 'who' }, names.get(p.assigneeId) || p.assigneeId || ''),
            el('span', { class: 'state' }, t(p.state))))
      : [el('li', { class: 'empty' }, t('noOverdue'))]),
  );

  renderTable($('workers'), 'BOARD_LEVEL_WORKER', b.workers || [], true);
  renderTable($('grids'), 'BOARD_LEVEL_GRID', b.grids || [], false);
  $('communities-card').hidden = !(b.communityId === undefined || b.communityId === '0');
  renderTable($('communities'), 'BOARD_LEVEL_COMMUNITY', communityRows, false);
  renderChart(b);
}

function fillCommunityPick(rows) {
  const pick = $('community');
  if (pick.options.length > 1 || !rows.length || $('community-pick').hidden) return;
  pick.replaceChildren(
    el('option', { value: '0' }, t('township')),
    ...rows.map((r) => el('option', { value: r.id }, r.name)),
  );
}

function renderTable(table, level, rows, withGrid) {
  const gridNames = new Map((state.board.grids || []).map((g) => [g.id, g.name]));
  const sorted = [...rows].sort((a, b) => (a.rank || 1e9) - (b.rank || 1e9) || Number(a.id) - Number(b.id));
  const head = el('tr', {},
    ...['rank', 'name', ...(withGrid ? ['grid'] : []), 'received', 'open', 'overdueResponse', 'overdueCompletion',
      'responseRate', 'resolutionRate', 'meanResponse', 'medianResponse', 'p90Response', 'reminders', 'escalations']
      .map((k) => el('th', {}, t(k))));
  const body = sorted.map((r) => {
    const f = (v, fig) => el('td', { class: 'n' }, figure(v, level, r.id, fig));
    return el('tr', { dataset: { rowId: r.id } },
      el('td', { class: 'n' }, r.rank || t('none')),
      el('td', {}, r.name || `#${r.id}`),
      ...(withGrid ? [el('td', {}, gridNames.get(r.gridId) || '')] : []),
      f(num(r.received), 'BOARD_FIGURE_RECEIVED'),
      f(num(r.open), 'BOARD_FIGURE_OPEN'),
      f(num(r.overdueResponse), 'BOARD_FIGURE_OVERDUE_RESPONSE'),
      f(num(r.overdueCompletion), 'BOARD_FIGURE_OVERDUE_COMPLETION'),
      f(pct(r.responseRate), 'BOARD_FIGURE_RESPONDED_LATE'),
      f(pct(r.resolutionRate), 'BOARD_FIGURE_RESOLVED'),
      el('td', { class: 'n' }, ms(r.firstResponseMeanMs, r.responded)),
      f(ms(r.firstResponseMedianMs, r.responded), 'BOARD_FIGURE_RESPONDED'),
      el('td', { class: 'n' }, ms(r.firstResponseP90Ms, r.responded)),
      f(num(r.reminders), 'BOARD_FIGURE_REMINDED'),
      f(num(r.escalations), 'BOARD_FIGURE_ESCALATED'));
  });
  table.replaceChildren(el('thead', {}, head), el('tbody', {}, ...body));
}

function renderChart(b) {
  const svg = $('chart');
  const counts = (b.bucketCounts || []).map(Number);
  const bounds = (b.bucketBoundsMs || []).map(Number);
  const max = Math.max(1, ...counts);
  const w = 640 / Math.max(1, counts.length);
  const ns = 'http://www.w3.org/2000/svg';
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const label = (i) =>
    i < bounds.length ? `${t('lessThan')} ${duration(bounds[i])}` : `${t('over')} ${duration(bounds[bounds.length - 1])}`;
  const bars = counts.flatMap((c, i) => {
    const h = (c / max) * 160;
    return [
      node('rect', { x: i * w + 6, y: 180 - h, width: w - 12, height: h, class: 'bar', 'data-count': c }),
      node('text', { x: i * w + w / 2, y: 175 - h, 'text-anchor': 'middle', class: 'count' }, String(c)),
      node('text', { x: i * w + w / 2, y: 200, 'text-anchor': 'middle', class: 'axis' }, label(i)),
    ];
  });
  svg.replaceChildren(...bars);
}

// ------------------------------------------------------------------ drill-down

async function drill(button) {
  const { level, id, figure: fig } = button.dataset;
  const w = state.watching;
  if (!w) return;
  const reply = await conn.request({
    getBoardPetitions: { communityId: w.communityId, range: w.range, level, id, figure: fig, limit: 100 },
  });
  const list = reply.petitions.petitions || [];
  $('drill-what').textContent = button.title || button.closest('tr')?.firstChild?.nextSibling?.textContent || '';
  $('drill-list').replaceChildren(
    el('thead', {}, el('tr', {}, ...['petition', 'title', 'state', 'assignee'].map((k) => el('th', {}, t(k))))),
    el('tbody', {}, ...list.map((p) =>
      el('tr', { dataset: { petitionId: p.id } },
        el('td', {}, `#${p.id}`),
        el('td', {}, p.title || ''),
        el('td', {}, t(p.state)),
        el('td', {}, (state.board.workers || []).find((r) => r.id === p.assigneeId)?.name || p.assigneeId || ''))),
    ),
  );
  $('drill').showModal();
}

// ------------------------------------------------------------------ wiring

function updateLangButton() {
  $('lang').textContent = lang() === 'en' ? '中文' : 'English';
}

window.addEventListener('DOMContentLoaded', async () => {
  applyStrings();
  updateLangButton();
  $('lang').addEventListener('click', () => {
    setLang(lang() === 'en' ? 'zh' : 'en');
    updateLangButton();
    render();
  });
  $('sign-in').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    try {
      await conn.signIn(String(form.get('login')), String(form.get('password')));
    } catch (e) {
      $('sign-in-error').textContent = e.code === 'ERROR_CODE_BAD_CREDENTIALS' ? t('badLogin') : e.message;
    }
  });
  $('sign-out').addEventListener('click', () => conn.signOut());
  $('range').addEventListener('change', () => watch());
  $('community').addEventListener('change', () => watch());
  document.body.addEventListener('click', (ev) => {
    const button = ev.target.closest('button.fig');
    if (button) drill(button);
  });
  await conn.connect();
  if (!conn.account) $('sign-in').hidden = false;
});

// For tests and the curious: the merged board and the connection.
window.lianxinBoard = { state, conn };
