// The resident's chat (/): sign in or register against an address, see my grid and whom I can @,
// raise a petition (category, text, photos, voice), follow the conversation live with read
// receipts and state changes, rate it once resolved, reopen it when not satisfied.

import {
  $, CATEGORIES, OPEN_STATES, Outbox, STAFF, ServerError, Store, clockTime, composer, el, frame, markRead,
  icon, registerServiceWorker, renderTimeline, t, toast,
} from './app.js';
import { newClientId } from './lianxin.js';

const store = new Store();
const state = {
  account: null,
  grid: null, // GridInfo
  view: 'home',
  open: null, // the petition shown
  unseen: new Set(), // petitions with news not yet looked at
  newVoice: null, // the voice clip attached to a new petition
  category: CATEGORIES[0],
};

const conn = frame({
  allowed: ['ROLE_RESIDENT'],
  handlers: {
    async onSignedIn(account, again) {
      state.account = account;
      await loadHome();
      await conn.subscribe();
      if (state.open) await openPetition(state.open, again);
      await outbox.restore(account.id);
      outbox.flush();
      if (!again) route();
    },
    onSignedOut() {
      state.account = null;
      show('sign-in-view');
    },
    onEvent(event, { fresh }) {
      const change = store.apply(event);
      if (!change.petitionId) return;
      const mine = change.entry && change.entry.authorId === state.account?.id;
      if (fresh && change.isNew && !mine && state.open !== change.petitionId && (change.entry || change.notice)) {
        state.unseen.add(change.petitionId);
        const p = store.petitions.get(change.petitionId);
        if (change.entry && STAFF.includes(change.entry.authorRole)) toast(`${change.entry.authorName}${t('colon')}${p?.title || ''}`);
      }
      refresh(change.petitionId);
    },
  },
  onLang: () => {
    buildStatic();
    refresh();
  },
});
const outbox = new Outbox(conn, () => refresh(state.open));

// ------------------------------------------------------------------ views

function show(view) {
  for (const id of ['sign-in-view', 'home', 'new', 'conversation']) $(id).hidden = id !== view;
  document.body.classList.toggle('in-conv', view === 'conversation');
  state.view = view;
}

/** The view of the address bar: #/ (home), #/new[?worker=ID], #/p/ID. */
async function route() {
  if (!state.account) return;
  const hash = location.hash.replace(/^#/, '');
  const m = hash.match(/^\/p\/(\d+)/);
  if (m) {
    await openPetition(m[1]);
  } else if (hash.startsWith('/new')) {
    state.open = null;
    const worker = new URLSearchParams(hash.split('?')[1] || '').get('worker') || '0';
    openNew(worker);
  } else {
    state.open = null;
    show('home');
    renderHome();
    // Who is on duty changes during the day: ask again whenever home shows.
    try {
      state.grid = (await conn.request({ getMyGrid: {} })).grid;
      if (state.view === 'home') renderHome();
    } catch {
      // Offline: the last known grid stays.
    }
  }
}

async function loadHome() {
  try {
    state.grid = (await conn.request({ getMyGrid: {} })).grid;
  } catch (e) {
    state.grid = null;
    if (!(e instanceof ServerError)) throw e;
  }
  const page = await conn.request({ listPetitions: { limit: 50 } });
  for (const p of page.petitions.petitions || []) store.upsert(p);
}

function renderHome() {
  const g = state.grid;
  const card = $('grid-card');
  if (g) {
    card.replaceChildren(
      el('h2', {}, `${t('myGrid')}${t('colon')}${g.grid.name.startsWith(g.community?.name || '\u0000') ? '' : `${g.community?.name || ''} `}${g.grid.name}`),
      el('p', { class: 'muted' }, `${t('jurisdiction')}${t('colon')}${(g.grid.jurisdiction || []).join('、')}`),
      el('h3', {}, t('canAt')),
      el('ul', { class: 'workers' }, (g.workers || []).map((w) =>
        el('li', { dataset: { workerId: w.id, testid: 'worker' } },
          el('span', { class: 'avatar', 'aria-hidden': 'true' }, (w.displayName || '?').slice(-2)),
          el('span', { class: 'who' },
            el('strong', {}, w.displayName),
            el('br'),
            w.role === 'ROLE_GRID_HEAD' ? el('span', { class: 'muted small' }, `${t('gridHead')} · `) : null,
            el('span', { class: `duty ${w.onDuty ? 'on' : 'off'}` }, w.onDuty ? t('onDuty') : t('offDuty')),
            w.online ? el('span', { class: 'online' }, ` · ${t('connectedNow')}`) : null),
          el('a', { class: 'at', href: `#/new?worker=${w.id}`, 'aria-label': `@${w.displayName}` }, '@')))),
    );
  } else {
    card.replaceChildren(el('p', { class: 'muted' }, t('none')));
  }
  const list = [...store.petitions.values()].sort((a, b) => Number(b.updatedAtMs || 0) - Number(a.updatedAtMs || 0));
  $('petition-list').replaceChildren(
    ...(list.length
      ? list.map((p) =>
          el('li', { dataset: { petitionId: p.id }, class: state.unseen.has(p.id) ? 'unseen' : '' },
            el('a', { href: `#/p/${p.id}` },
              el('span', { class: 'ptitle' }, p.title || `#${p.id}`),
              el('span', { class: `state-chip ${p.state}` }, t(p.state)),
              el('span', { class: 'muted small' }, `${t(p.category)} · ${clockTime(p.updatedAtMs || p.createdAtMs, conn.serverNow())}`))))
      : [el('li', { class: 'muted' }, t('noPetitions'))]),
  );
}

// ------------------------------------------------------------------ a new petition

let newComposer;

function buildStatic() {
  $('categories').replaceChildren(
    el('legend', {}, t('category')),
    ...CATEGORIES.map((c) =>
      el('label', { class: 'chip' },
        el('input', { type: 'radio', name: 'category', value: c, checked: c === state.category, onchange: () => { state.category = c; } }),
        el('span', {}, t(c)))),
  );
  fillWorkers($('at-worker').value);
}

function fillWorkers(selected) {
  const workers = state.grid?.workers || [];
  $('at-worker').replaceChildren(
    el('option', { value: '0' }, t('anyone')),
    ...workers.map((w) => el('option', { value: w.id }, `@${w.displayName}（${w.onDuty ? t('onDuty') : t('offDuty')}）`)),
  );
  $('at-worker').value = workers.some((w) => w.id === selected) ? selected : '0';
}

function openNew(worker) {
  show('new');
  fillWorkers(worker);
  $('new-error').textContent = '';
}

function showNewVoice() {
  $('new-voice').replaceChildren(
    ...(state.newVoice
      ? [el('span', { class: 'preview voice-chip' }, icon('mic'), ` ${t('voice')}`,
          el('button', { type: 'button', class: 'remove', onclick: () => { state.newVoice = null; showNewVoice(); } }, '×'))]
      : []),
  );
}

async function submitNew(ev) {
  ev.preventDefault();
  const { text, photos } = { text: newComposer.text.value.trim(), photos: [...newComposer.photos] };
  const body = text || (state.newVoice ? `（${t('voice')}）` : photos.length ? `（${t('photo')}）` : '');
  if (!body) {
    $('new-error').textContent = t('needText');
    return;
  }
  const form = new FormData($('new-form'));
  const clientMsgId = newClientId('p');
  try {
    const r = await conn.request({
      submitPetition: {
        category: state.category,
        title: String(form.get('title') || '').trim(),
        text: body,
        workerId: String(form.get('worker') || '0'),
        clientMsgId,
      },
    });
    const p = store.upsert(r.petition.petition);
    newComposer.take();
    $('new-form').reset();
    buildStatic();
    if (photos.length) outbox.send(p.id, '', photos);
    if (state.newVoice) outbox.send(p.id, '', [], state.newVoice);
    state.newVoice = null;
    showNewVoice();
    toast(t('submitted'), 'good');
    location.hash = `#/p/${p.id}`;
  } catch (e) {
    $('new-error').textContent = e.code === 'DISCONNECTED' ? t('notConnected') : e.message;
  }
}

// ------------------------------------------------------------------ a conversation

async function openPetition(id, reload = false) {
  state.open = id;
  state.unseen.delete(id);
  show('conversation');
  if (reload || !store.entries.has(id)) {
    try {
      await store.load(conn, id);
    } catch (e) {
      if (e instanceof ServerError && e.code === 'ERROR_CODE_NOT_FOUND') {
        location.hash = '#/';
        return;
      }
    }
  }
  renderConversation();
}

function renderConversation() {
  const id = state.open;
  const p = store.petitions.get(id);
  if (!p) return;
  $('conv-title').textContent = p.title || `#${p.id}`;
  const chip = $('conv-state');
  chip.textContent = t(p.state);
  chip.className = `state-chip ${p.state}`;
  const assignee = (state.grid?.workers || []).find((w) => w.id === p.assigneeId);
  $('conv-who').textContent = `${t(p.category)}${assignee ? ` · @${assignee.displayName}` : ''}`;
  $('withdraw').hidden = !OPEN_STATES.includes(p.state);
  $('rate-box').hidden = p.state !== 'PETITION_STATE_RESOLVED';
  $('reopen-box').hidden = p.state !== 'PETITION_STATE_CLOSED';
  $('conv-composer').hidden = !(OPEN_STATES.includes(p.state) || p.state === 'PETITION_STATE_RESOLVED');
  // The timeline last, once the boxes around it took their place (it scrolls to its end).
  renderTimeline($('timeline'), { conn, store, outbox, petitionId: id, me: state.account.id });
  markRead(conn, store, id, state.account.id);
}

async function rate(level) {
  try {
    const r = await conn.request({ rate: { petitionId: state.open, level, comment: $('rate-comment').value.trim() } });
    store.upsert(r.petition.petition);
    $('rate-comment').value = '';
    toast(t('rateThanks'), 'good');
    renderConversation();
  } catch (e) {
    toast(e.code === 'DISCONNECTED' ? t('notConnected') : e.message, 'bad');
  }
}

async function reopen() {
  const reason = $('reopen-reason').value.trim();
  if (!reason) {
    $('reopen-reason').focus();
    toast(t('reopenReason'), 'bad');
    return;
  }
  try {
    const r = await conn.request({ reopen: { petitionId: state.open, reason } });
    store.upsert(r.petition.petition);
    $('reopen-reason').value = '';
    toast(t('reopened'), 'good');
    renderConversation();
  } catch (e) {
    toast(e.code === 'DISCONNECTED' ? t('notConnected') : e.message, 'bad');
  }
}

/** Withdraws the open petition, once the resident confirmed it (with an optional reason). */
async function withdraw() {
  const dialog = $('withdraw-dialog');
  const form = dialog.querySelector('form');
  form.reset();
  dialog.returnValue = '';
  dialog.showModal();
  const confirmed = await new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
  if (!confirmed) return;
  const reason = String(new FormData(form).get('reason') || '').trim();
  try {
    const r = await conn.request({ withdraw: { petitionId: state.open, reason } });
    store.upsert(r.petition.petition);
    toast(t('withdrawn'), 'good');
    renderConversation();
  } catch (e) {
    toast(e.code === 'DISCONNECTED' ? t('notConnected') : e.message, 'bad');
  }
}

/** Re-renders what shows the petition (or everything). */
function refresh(petitionId) {
  if (!state.account) return;
  if (state.view === 'home') renderHome();
  if (state.view === 'conversation' && (!petitionId || petitionId === state.open)) renderConversation();
}

// ------------------------------------------------------------------ registration

async function lookUp() {
  const address = String(new FormData($('register')).get('address') || '').trim();
  if (!address) return;
  try {
    const r = await conn.request({ lookupAddress: { address } });
    const g = r.grid;
    $('register-grid').replaceChildren(
      el('strong', {}, `${g.community?.name || ''} ${g.grid.name}`),
      el('span', { class: 'muted' }, ` · ${(g.workers || []).map((w) => w.displayName).join('、')}`),
    );
    $('register-error').textContent = '';
  } catch (e) {
    $('register-grid').replaceChildren();
    $('register-error').textContent = e.code === 'ERROR_CODE_NOT_FOUND' ? t('noGrid') : e.message;
  }
}

async function register(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await conn.register({
      login: String(f.get('login')).trim(),
      password: String(f.get('password')),
      displayName: String(f.get('displayName')).trim(),
      address: String(f.get('address')).trim(),
    });
    $('register-error').textContent = '';
  } catch (e) {
    $('register-error').textContent =
      e.code === 'ERROR_CODE_CONFLICT' ? t('loginTaken') : /grid/.test(e.message) ? t('noGrid') : e.message;
  }
}

// ------------------------------------------------------------------ wiring

window.addEventListener('DOMContentLoaded', async () => {
  registerServiceWorker();
  newComposer = composer({
    big: true,
    withSendButton: false,
    onVoice: (blob) => {
      state.newVoice = blob;
      showNewVoice();
    },
    onError: (m) => toast(m, 'bad'),
  });
  $('new-composer').append(newComposer.form);
  // The new-petition composer is part of the outer form: its own form must not nest.
  newComposer.form.replaceWith(...newComposer.form.childNodes);
  const chat = composer({
    onSend: ({ text, photos }) => outbox.send(state.open, text, photos),
    onVoice: (blob) => outbox.send(state.open, '', [], blob),
    onError: (m) => toast(m, 'bad'),
  });
  $('conv-composer').append(chat.form);
  buildStatic();
  $('new-form').addEventListener('submit', submitNew);
  $('raise').addEventListener('click', () => { location.hash = '#/new'; });
  for (const b of document.querySelectorAll('[data-back]')) b.addEventListener('click', () => { location.hash = '#/'; });
  for (const b of document.querySelectorAll('[data-level]')) b.addEventListener('click', () => rate(b.dataset.level));
  $('reopen').addEventListener('click', reopen);
  $('withdraw').addEventListener('click', withdraw);
  $('look-up').addEventListener('click', lookUp);
  $('register').addEventListener('submit', register);
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => state.open && markRead(conn, store, state.open, state.account?.id));
  await conn.connect();
  if (!conn.account) show('sign-in-view');
});

// For tests and the curious.
window.lianxinResident = { state, store, conn, outbox };
