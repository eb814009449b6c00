// The grid worker's app (/worker): the inbox sorted by urgency (overdue first, time left shown),
// live alerts of new, transferred, reminded and escalated petitions (an in-page banner with a beep,
// a system notification when allowed, a badge count), the conversation with replies by text,
// photo or voice, and the actions: resolve with a summary, transfer, escalate; the on-duty switch.
// Installable (manifest + service worker).

import {
  $, OPEN_STATES, Outbox, ServerError, Store, composer, duration, el, frame, markRead, registerServiceWorker,
  renderTimeline, t, toast,
} from './app.js';

const store = new Store();
const state = {
  account: null,
  grid: null,
  inbox: new Set(), // petition ids in the inbox
  open: null,
  unseen: new Set(), // petitions with alerts not yet looked at
  alerts: [], // { kind, petitionId, title, atMs }, newest first
  systemNotifications: 0, // notifications handed to the browser
};

const conn = frame({
  allowed: ['ROLE_WORKER', 'ROLE_GRID_HEAD'],
  handlers: {
    async onSignedIn(account, again) {
      state.account = account;
      $('app').hidden = false;
      await load();
      await conn.subscribe();
      if (state.open) await openPetition(state.open, true);
      await outbox.restore(account.id);
      outbox.flush();
      if (!again) route();
      renderInbox();
    },
    onSignedOut() {
      state.account = null;
      $('app').hidden = true;
      $('duty-switch').hidden = true;
    },
    onEvent(event, { fresh }) {
      const change = store.apply(event);
      if (!change.petitionId) return;
      if (change.entry && (change.entry.transition || change.entry.supervision)) refetch(change.petitionId);
      placeInInbox(change.petitionId);
      if (fresh) alertFor(change);
      refresh(change.petitionId);
    },
  },
  onLang: () => {
    fillTransferTargets();
    renderInbox();
    if (state.open) renderConversation();
    renderAlerts();
  },
});
const outbox = new Outbox(conn, () => state.open && renderConversation());

// ------------------------------------------------------------------ inbox

async function load() {
  try {
    state.grid = (await conn.request({ getMyGrid: {} })).grid;
  } catch (e) {
    if (!(e instanceof ServerError)) throw e;
  }
  const me = (state.grid?.workers || []).find((w) => w.id === state.account.id);
  $('duty').checked = Boolean(me?.onDuty);
  $('duty-switch').hidden = false;
  dutyLabel();
  fillTransferTargets();
  const inbox = await conn.request({ getInbox: {} });
  state.inbox.clear();
  for (const p of inbox.petitions.petitions || []) {
    store.upsert(p);
    state.inbox.add(p.id);
  }
}

/** A petition is in the inbox while it is open and assigned to me. */
function placeInInbox(id) {
  const p = store.petitions.get(id);
  if (p && p.assigneeId === state.account?.id && OPEN_STATES.includes(p.state)) state.inbox.add(id);
  else state.inbox.delete(id);
}

const refetching = new Set();
/** Reads the petition again (its deadlines and ladder move with transitions and steps). */
function refetch(id) {
  if (refetching.has(id)) return;
  refetching.add(id);
  setTimeout(async () => {
    refetching.delete(id);
    try {
      const d = await conn.request({ getPetition: { petitionId: id } });
      store.upsert(d.petitionDetail.petition);
      placeInInbox(id);
      refresh(id);
    } catch {
      // Not visible any more (transferred to another grid), or offline: the feed catches up.
    }
  }, 100);
}

/** The deadline that matters now: the response while none came, else the completion. */
function dueOf(p) {
  const waiting = p.state === 'PETITION_STATE_SUBMITTED' || p.state === 'PETITION_STATE_TRANSFERRED';
  return { kind: waiting ? 'respondBy' : 'completeBy', at: Number((waiting ? p.responseDueAtMs : p.completionDueAtMs) || 0) };
}

function dueText(p) {
  const due = dueOf(p);
  if (!due.at) return { text: '', overdue: false };
  const left = due.at - conn.serverNow();
  return left >= 0
    ? { text: t('leftFmt').replace('{what}', t(due.kind)).replace('{d}', duration(left)), overdue: false }
    : { text: t('overdueFmt').replace('{what}', t(due.kind)).replace('{d}', duration(-left)), overdue: true };
}

function renderInbox() {
  if (!state.account) return;
  const items = [...state.inbox].map((id) => store.petitions.get(id)).filter(Boolean);
  // Most urgent first: the earliest deadline (so the longest overdue) on top.
  items.sort((a, b) => (dueOf(a).at || Infinity) - (dueOf(b).at || Infinity) || Number(a.id) - Number(b.id));
  $('inbox-count').textContent = items.length ? `(${items.length})` : '';
  $('inbox').replaceChildren(
    ...(items.length
      ? items.map((p) => {
          const due = dueText(p);
          return el('li', {
            class: [due.overdue ? 'overdue' : '', state.unseen.has(p.id) ? 'unseen' : '', state.open === p.id ? 'current' : ''].join(' '),
            dataset: { petitionId: p.id, testid: 'inbox-item' },
          },
          el('a', { href: `#/p/${p.id}` },
            el('span', { class: 'ptitle' }, p.title || `#${p.id}`),
            el('span', { class: `state-chip ${p.state}` }, t(p.state)),
            el('span', { class: 'muted small' }, `${p.residentName || ''} · ${t(p.category)}`),
            el('span', { class: `due${due.overdue ? ' late' : ''}`, dataset: { testid: 'due' } }, due.text)));
        })
      : [el('li', { class: 'muted empty' }, t('inboxEmpty'))]),
  );
}

// ------------------------------------------------------------------ alerts

let audio = null;
/** A short two-tone beep (WebAudio; allowed once the user has touched the page). */
function beep() {
  try {
    audio ??= new AudioContext();
    if (audio.state === 'suspended') audio.resume();
    for (const [at, freq] of [[0, 880], [0.2, 1175]]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, audio.currentTime + at);
      gain.gain.exponentialRampToValueAtTime(0.3, audio.currentTime + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + at + 0.18);
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + at);
      osc.stop(audio.currentTime + at + 0.2);
    }
  } catch {
    // No audio on this device: the banner and the badge remain.
  }
}

/** What to alert about for a change of the feed, if anything. */
function alertKind(change) {
  const me = state.account.id;
  // A notice comes once (events are deduplicated by cursor), whether or not the entry it carries
  // arrived first in its own EntryAdded event.
  if (change.notice) {
    switch (change.notice.kind) {
      case 'NOTICE_KIND_NEW_PETITION':
        return 'alertNew';
      case 'NOTICE_KIND_TRANSFERRED_IN':
        return 'alertTransferred';
      case 'NOTICE_KIND_TRANSFERRED_OUT':
        return 'alertTransferredOut';
      default:
        return null;
    }
  }
  const e = change.entry;
  if (!e || !change.isNew) return null;
  if (e.supervision) {
    return { STEP_KIND_WARNING: 'alertWarning', STEP_KIND_REMINDER: 'alertReminder', STEP_KIND_ESCALATION: 'alertEscalation' }[e.supervision.step] || null;
  }
  if (e.text || e.media?.length) return e.authorRole === 'ROLE_RESIDENT' && e.authorId !== me ? 'alertMessage' : null;
  return null;
}

function alertFor(change) {
  const kind = alertKind(change);
  if (!kind) return;
  const id = change.petitionId;
  const p = store.petitions.get(id);
  const title = p?.title || `#${id}`;
  state.alerts.unshift({ kind, petitionId: id, title, atMs: Date.now() });
  state.alerts.length = Math.min(state.alerts.length, 30);
  const viewing = state.open === id && document.visibilityState === 'visible';
  if (!viewing && kind !== 'alertTransferredOut') state.unseen.add(id);
  const banner = $('alert');
  if (kind === 'alertMessage' && !banner.hidden && banner.dataset.petitionId === id) {
    // The photos or voice that follow a new petition: the banner about it stays.
    updateBadge();
    renderAlerts();
    return;
  }
  banner.replaceChildren(el('strong', {}, t(kind)), ` ${title}`, el('span', { class: 'muted' }, p?.residentName ? ` · ${p.residentName}` : ''));
  banner.dataset.petitionId = id;
  banner.dataset.kind = kind;
  banner.className = `alert-banner ${kind}`;
  banner.hidden = false;
  clearTimeout(banner.timer);
  banner.timer = setTimeout(() => { banner.hidden = true; }, 12000);
  if (kind !== 'alertTransferredOut') beep();
  systemNotification(t(kind), `${title}${p?.residentName ? ` · ${p.residentName}` : ''}`, id);
  updateBadge();
  renderAlerts();
}

/** A notification of the system (phone's notification shade), when the user allowed it. */
async function systemNotification(title, body, petitionId) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  const options = { body, tag: `petition-${petitionId}`, icon: '/web/icon-192.png', data: { url: `/worker#/p/${petitionId}` } };
  try {
    const reg = await navigator.serviceWorker?.getRegistration?.();
    if (reg) await reg.showNotification(title, options);
    else new Notification(title, options);
    state.systemNotifications += 1;
  } catch {
    // Some browsers refuse one way and not the other; the in-page alert is there anyway.
  }
}

function updateBadge() {
  const n = state.unseen.size;
  const badge = $('badge');
  badge.textContent = String(n);
  badge.hidden = n === 0;
  document.title = `${n ? `(${n}) ` : ''}${t('appName')} · ${t('workerTitle')}`;
  if (navigator.setAppBadge) (n ? navigator.setAppBadge(n) : navigator.clearAppBadge()).catch(() => {});
}

function renderAlerts() {
  $('alert-list').replaceChildren(
    ...state.alerts.map((a) =>
      el('li', { class: state.unseen.has(a.petitionId) ? 'unseen' : '' },
        el('a', { href: `#/p/${a.petitionId}` }, el('strong', {}, t(a.kind)), ` ${a.title}`))),
  );
}

// ------------------------------------------------------------------ conversation

function route() {
  const m = location.hash.match(/^#\/p\/(\d+)/);
  if (m) openPetition(m[1]);
  else closePetition();
}

function closePetition() {
  state.open = null;
  $('conv').hidden = true;
  $('conv-empty').hidden = false;
  document.body.classList.remove('show-conv');
  renderInbox();
}

async function openPetition(id, reload = false) {
  state.open = id;
  state.unseen.delete(id);
  updateBadge();
  $('alert-list').hidden = true;
  $('conv').hidden = false;
  $('conv-empty').hidden = true;
  document.body.classList.add('show-conv');
  if (reload || !store.entries.has(id)) {
    try {
      await store.load(conn, id);
    } catch (e) {
      if (e instanceof ServerError && e.code === 'ERROR_CODE_NOT_FOUND') {
        location.hash = '';
        return;
      }
    }
  }
  renderConversation();
  renderInbox();
}

function renderConversation() {
  const id = state.open;
  const p = store.petitions.get(id);
  if (!p) return;
  $('conv-title').textContent = p.title || `#${p.id}`;
  const chip = $('conv-state');
  chip.textContent = t(p.state);
  chip.className = `state-chip ${p.state}`;
  $('conv-who').textContent = `${t('residentLabel')}${t('colon')}${p.residentName || ''} · ${t(p.category)}`;
  const due = OPEN_STATES.includes(p.state) ? dueText(p) : { text: p.resolution ? `${t('resolvedWith')}${t('colon')}${p.resolution}` : '', overdue: false };
  $('conv-due').textContent = due.text;
  $('conv-due').classList.toggle('late', due.overdue);
  // Handled here while it is mine or in my grid (a petition transferred to another grid is not).
  const mine = p.assigneeId === state.account.id || (state.grid && p.gridId === state.grid.grid.id);
  const open = OPEN_STATES.includes(p.state) && mine;
  $('do-resolve').disabled = !['PETITION_STATE_RESPONDED', 'PETITION_STATE_ESCALATED'].includes(p.state);
  $('do-transfer').disabled = !open;
  $('do-escalate').disabled = !open || p.state === 'PETITION_STATE_ESCALATED';
  $('actions').hidden = !open;
  $('conv-composer').hidden = !(open || (mine && p.state === 'PETITION_STATE_RESOLVED'));
  renderTimeline($('timeline'), { conn, store, outbox, petitionId: id, me: state.account.id });
  markRead(conn, store, id, state.account.id);
}

/** Runs an action on the open petition; the petition in the reply replaces ours. True if done. */
async function act(request) {
  try {
    const r = await conn.request(request);
    if (r.petition?.petition) store.upsert(r.petition.petition);
    placeInInbox(state.open);
    renderConversation();
    renderInbox();
    return true;
  } catch (e) {
    toast(e.code === 'DISCONNECTED' ? t('notConnected') : e.message, 'bad');
    return false;
  }
}

function fillTransferTargets() {
  const select = document.querySelector('#transfer-dialog select[name=worker]');
  const others = (state.grid?.workers || []).filter((w) => w.id !== state.account?.id);
  select.replaceChildren(
    el('option', { value: '0' }, t('pickColleague')),
    ...others.map((w) => el('option', { value: w.id }, `${w.displayName}（${w.onDuty ? t('onDuty') : t('offDuty')}）`)),
  );
}

/** Opens a dialog; resolves with its form's data when confirmed, null when cancelled. */
function ask(dialogId) {
  const dialog = $(dialogId);
  const form = dialog.querySelector('form');
  form.reset();
  dialog.returnValue = ''; // closed with Escape: not the last confirmation again
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok' ? new FormData(form) : null), { once: true });
  });
}

async function resolvePetition() {
  const f = await ask('resolve-dialog');
  const summary = String(f?.get('summary') || '').trim();
  if (f && summary) await act({ resolve: { petitionId: state.open, summary } });
}

/** Finds the grid of an address typed in the transfer dialog; offers its workers. */
async function lookUpTransferGrid() {
  const address = String(document.querySelector('#transfer-dialog input[name=address]').value || '').trim();
  const other = $('transfer-other');
  other.hidden = true;
  other.replaceChildren();
  $('transfer-grid').textContent = '';
  if (!address) return;
  try {
    const g = (await conn.request({ lookupAddress: { address } })).grid;
    if (g.grid.id === state.grid?.grid?.id) {
      $('transfer-grid').textContent = t('ownGrid');
      return;
    }
    $('transfer-grid').textContent = `${g.grid.name.startsWith(g.community?.name || '\u0000') ? '' : `${g.community?.name || ''} `}${g.grid.name}`;
    other.replaceChildren(
      el('option', { value: `grid:${g.grid.id}` }, t('gridPicks')),
      ...(g.workers || []).map((w) => el('option', { value: `worker:${w.id}` }, `${w.displayName}（${w.onDuty ? t('onDuty') : t('offDuty')}）`)),
    );
    other.hidden = false;
  } catch (e) {
    $('transfer-grid').textContent = e.code === 'ERROR_CODE_NOT_FOUND' ? t('noGrid') : e.code === 'DISCONNECTED' ? t('notConnected') : e.message;
  }
}

async function transferPetition() {
  $('transfer-grid').textContent = '';
  $('transfer-other').hidden = true;
  $('transfer-other').replaceChildren();
  const f = await ask('transfer-dialog');
  if (!f) return;
  let toWorkerId = String(f.get('worker') || '0');
  let toGridId = '0';
  const other = $('transfer-other').hidden ? '' : String(f.get('other') || '');
  if (toWorkerId === '0' && other) {
    const [kind, id] = other.split(':');
    if (kind === 'grid') toGridId = id;
    else toWorkerId = id;
  }
  const reason = String(f.get('reason') || '').trim();
  if (!reason || (toWorkerId === '0' && toGridId === '0')) {
    toast(t('chooseTarget'), 'bad');
    return;
  }
  const petitionId = state.open;
  if (await act({ transfer: { petitionId, toWorkerId, toGridId, reason } })) {
    // Handed on: it is not mine to handle any more; back to the inbox.
    toast(`${t('transferredAway')}${t('colon')}${store.petitions.get(petitionId)?.title || `#${petitionId}`}`, 'good');
    if (state.open === petitionId) location.hash = '';
  }
}

async function escalatePetition() {
  const f = await ask('escalate-dialog');
  if (!f) return;
  await act({
    escalate: {
      petitionId: state.open,
      target: String(f.get('target')),
      unitName: String(f.get('unit') || '').trim(),
      note: String(f.get('note') || '').trim(),
    },
  });
}

function refresh(id) {
  renderInbox();
  if (state.open && (!id || id === state.open)) renderConversation();
}

function dutyLabel() {
  $('duty-label').textContent = $('duty').checked ? t('onDuty') : t('offDuty');
  $('duty-switch').classList.toggle('on', $('duty').checked);
}

// ------------------------------------------------------------------ wiring

window.addEventListener('DOMContentLoaded', async () => {
  registerServiceWorker();
  const chat = composer({
    onSend: ({ text, photos }) => outbox.send(state.open, text, photos),
    onVoice: (blob) => outbox.send(state.open, '', [], blob),
    onError: (m) => toast(m, 'bad'),
  });
  $('conv-composer').append(chat.form);
  $('do-resolve').addEventListener('click', resolvePetition);
  $('do-transfer').addEventListener('click', transferPetition);
  $('do-escalate').addEventListener('click', escalatePetition);
  $('transfer-look-up').addEventListener('click', lookUpTransferGrid);
  document.querySelector('#transfer-dialog input[name=address]').addEventListener('keydown', (e) => {
    // Enter looks the address up (it would otherwise submit the dialog as cancelled).
    if (e.key === 'Enter') {
      e.preventDefault();
      lookUpTransferGrid();
    }
  });
  $('back').addEventListener('click', () => { location.hash = ''; });
  $('alert').addEventListener('click', () => { location.hash = `#/p/${$('alert').dataset.petitionId}`; $('alert').hidden = true; });
  $('bell').addEventListener('click', () => { $('alert-list').hidden = !$('alert-list').hidden; renderAlerts(); });
  $('duty').addEventListener('change', async () => {
    dutyLabel();
    try {
      await conn.request({ setOnDuty: { onDuty: $('duty').checked } });
    } catch (e) {
      $('duty').checked = !$('duty').checked;
      dutyLabel();
      toast(e.code === 'DISCONNECTED' ? t('notConnected') : e.message, 'bad');
    }
  });
  if ('Notification' in window && Notification.permission === 'default') {
    $('notify-permission').hidden = false;
    $('notify-permission').addEventListener('click', async () => {
      await Notification.requestPermission();
      $('notify-permission').hidden = Notification.permission !== 'default';
    });
  }
  // The first touch unlocks sound for the alerts.
  addEventListener('pointerdown', () => { audio ??= new AudioContext(); audio.resume?.(); }, { once: true });
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => state.open && state.account && markRead(conn, store, state.open, state.account.id));
  // Time left moves on by itself.
  setInterval(() => refresh(), 30000);
  updateBadge();
  await conn.connect();
  if (!conn.account) $('sign-in-view').hidden = false;
});

// For tests and the curious.
window.lianxinWorker = { state, store, conn, outbox };
