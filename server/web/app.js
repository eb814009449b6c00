// What the resident's chat (/) and the grid worker's app (/worker) share: a store of petitions,
// timelines and read marks kept current by the feed (entries deduplicated by their sequence
// number), the timeline view with photos, voice and read receipts, the message composer with
// photo picking and hold-to-talk recording, an outbox that resends after a reconnect, and the
// page frame (status, language switch, sign-in). Strings come from i18n.js.

import { Connection, ServerError, homeOf, newClientId } from './lianxin.js';
import { applyStrings, clockTime, duration, lang, setLang, t } from './i18n.js';

export const $ = (id) => document.getElementById(id);

/** Builds an element: el('td', { class: 'n' }, 'text', child). Text is never parsed as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const ICONS = {
  camera: ['M4 7h3l2-2h6l2 2h3a1 1 0 0 1 1 1v10a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1z', 'M12 9.5a3.5 3.5 0 1 0 0 7a3.5 3.5 0 1 0 0-7z'],
  image: ['M5 5h14a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V7a2 2 0 0 1 2-2z', 'M3 16l5-5 4 4 3-3 6 6', 'M8.5 8a1.5 1.5 0 1 0 0 3a1.5 1.5 0 1 0 0-3z'],
  mic: ['M12 3a3 3 0 0 1 3 3v5a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3z', 'M5 11a7 7 0 0 0 14 0', 'M12 18v3'],
};

/** A small line icon (inline SVG, drawn in the text colour). */
export function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: '1.2em', height: '1.2em', fill: 'none', stroke: 'currentColor', 'stroke-width': '2', 'stroke-linecap': 'round', 'stroke-linejoin': 'round', class: 'icon', 'aria-hidden': 'true' })) {
    svg.setAttribute(k, v);
  }
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}

export const STAFF = ['ROLE_WORKER', 'ROLE_GRID_HEAD', 'ROLE_COMMUNITY_SUPERVISOR', 'ROLE_TOWNSHIP_SUPERVISOR', 'ROLE_ADMIN'];
export const CATEGORIES = [
  'CATEGORY_SITUATION_REPORT',
  'CATEGORY_REQUEST_FOR_HELP',
  'CATEGORY_POLICY_QUESTION',
  'CATEGORY_COMPLAINT',
  'CATEGORY_SUGGESTION',
];
export const OPEN_STATES = ['PETITION_STATE_SUBMITTED', 'PETITION_STATE_RESPONDED', 'PETITION_STATE_TRANSFERRED', 'PETITION_STATE_ESCALATED'];

// ------------------------------------------------------------------ the store

/** The petitions, timelines and read marks the page knows, kept current by queries and the feed. */
export class Store {
  constructor() {
    this.petitions = new Map(); // id → Petition
    this.entries = new Map(); // petition id → Map(seq → Entry)
    this.marks = new Map(); // petition id → Map(reader id → ReadMark)
  }

  /** Keeps the newer of two copies of a petition. */
  upsert(p) {
    const old = this.petitions.get(p.id);
    if (!old || Number(p.updatedAtMs || 0) >= Number(old.updatedAtMs || 0)) this.petitions.set(p.id, p);
    return this.petitions.get(p.id);
  }

  /** Adds a timeline entry; false when it was there already (same petition and seq). */
  addEntry(e) {
    let list = this.entries.get(e.petitionId);
    if (!list) this.entries.set(e.petitionId, (list = new Map()));
    if (list.has(e.seq)) return false;
    list.set(e.seq, e);
    return true;
  }

  timeline(petitionId) {
    return [...(this.entries.get(petitionId)?.values() || [])].sort((a, b) => Number(a.seq) - Number(b.seq));
  }

  setMark(m) {
    let marks = this.marks.get(m.petitionId);
    if (!marks) this.marks.set(m.petitionId, (marks = new Map()));
    const old = marks.get(m.readerId);
    if (!old || Number(m.seq) > Number(old.seq)) marks.set(m.readerId, m);
  }

  /** The highest seq read by anyone but `me`. */
  readByOthers(petitionId, me) {
    let seq = 0;
    for (const m of this.marks.get(petitionId)?.values() || []) {
      if (m.readerId !== me) seq = Math.max(seq, Number(m.seq));
    }
    return seq;
  }

  myMark(petitionId, me) {
    return Number(this.marks.get(petitionId)?.get(me)?.seq || 0);
  }

  /**
   * Applies one feed event. Returns what changed: { petitionId, entry, notice, receipt, isNew }
   * (`isNew` false when the entry was known already).
   */
  apply(event) {
    if (event.petitionNotice) {
      const n = event.petitionNotice;
      const p = this.upsert(n.petition);
      let isNew = false;
      for (const e of n.entries || []) isNew = this.addEntry(e) || isNew;
      return { petitionId: p.id, notice: n, isNew };
    }
    if (event.entryAdded) {
      const { entry, state, assigneeId } = event.entryAdded;
      const isNew = this.addEntry(entry);
      const p = this.petitions.get(entry.petitionId);
      if (p && isNew) {
        const changed = { ...p, state, assigneeId: assigneeId || p.assigneeId };
        if (Number(entry.seq) > Number(p.lastSeq || 0)) changed.lastSeq = entry.seq;
        changed.updatedAtMs = entry.atMs;
        if (entry.transition?.action === 'ACTION_RESOLVE') changed.resolution = entry.transition.reason;
        if (entry.transition?.rating) changed.ratings = [...(p.ratings || []), entry.transition.rating];
        if (entry.transition?.action === 'ACTION_REOPEN') changed.round = entry.transition.round;
        this.petitions.set(p.id, changed);
      }
      return { petitionId: entry.petitionId, entry, isNew };
    }
    if (event.readReceipt) {
      this.setMark(event.readReceipt.mark);
      return { petitionId: event.readReceipt.mark.petitionId, receipt: event.readReceipt.mark };
    }
    return {};
  }

  /** Loads a petition, its read marks and its whole timeline. */
  async load(conn, petitionId) {
    const d = await conn.request({ getPetition: { petitionId } });
    this.upsert(d.petitionDetail.petition);
    for (const m of d.petitionDetail.readMarks || []) this.setMark(m);
    let after = '0';
    for (;;) {
      const h = await conn.request({ getHistory: { petitionId, afterSeq: after, limit: 200 } });
      for (const e of h.history.entries || []) this.addEntry(e);
      if (!h.history.nextAfterSeq || h.history.nextAfterSeq === '0') break;
      after = h.history.nextAfterSeq;
    }
    return this.petitions.get(petitionId);
  }
}

// ------------------------------------------------------------------ the outbox

const OUTBOX_DB = 'lianxin-outbox';
const OUTBOX_STORE = 'items';

/** The outbox's IndexedDB database (null where the browser has none, e.g. some private modes). */
function openOutboxDb() {
  return new Promise((resolve) => {
    let request;
    try {
      request = indexedDB.open(OUTBOX_DB, 1);
    } catch {
      resolve(null);
      return;
    }
    request.onupgradeneeded = () => request.result.createObjectStore(OUTBOX_STORE, { keyPath: 'clientMsgId' });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => resolve(null);
    request.onblocked = () => resolve(null);
  });
}

/** Runs one request on the outbox store; resolves with its result (undefined on failure). */
function outboxStore(db, mode, use) {
  return new Promise((resolve) => {
    if (!db) {
      resolve(undefined);
      return;
    }
    try {
      const tx = db.transaction(OUTBOX_STORE, mode);
      const request = use(tx.objectStore(OUTBOX_STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => resolve(undefined);
      tx.onabort = () => resolve(undefined);
    } catch {
      resolve(undefined);
    }
  });
}

/**
 * Messages on their way: each has a clientMsgId, so sending it again after a lost connection
 * stores it once. Photos and voice are uploaded first (POST /media), then the message is sent.
 * Until the server has it, a message (with its photos and voice) is also kept in IndexedDB, so a
 * page reloaded or closed while offline sends it on its next sign-in (`restore`).
 */
export class Outbox {
  constructor(conn, onChange) {
    this.conn = conn;
    this.onChange = onChange;
    this.items = [];
    this.busy = false;
    this.db = null;
    this.saving = Promise.resolve(); // the IndexedDB writes, in order
  }

  /** Queues a write to IndexedDB after the ones before it. */
  save(use) {
    this.saving = this.saving.then(async () => {
      this.db ??= openOutboxDb();
      await outboxStore(await this.db, 'readwrite', use);
    });
    return this.saving;
  }

  /** Keeps an item until it is sent (what is kept: no state of this page). */
  keep(item) {
    const { clientMsgId, accountId, petitionId, text, photos, voice, mediaIds, createdAtMs } = item;
    return this.save((s) => s.put({ clientMsgId, accountId, petitionId, text, photos, voice, mediaIds, createdAtMs }));
  }

  /** Forgets a kept item (sent, or refused by the server). */
  forget(item) {
    return this.save((s) => s.delete(item.clientMsgId));
  }

  /** Resolves once everything queued is written to IndexedDB. */
  saved() {
    return this.saving;
  }

  /** Takes back the messages this account left unsent on this device (before a reload). */
  async restore(accountId) {
    await this.saving;
    this.db ??= openOutboxDb();
    const kept = (await outboxStore(await this.db, 'readonly', (s) => s.getAll())) || [];
    const known = new Set(this.items.map((i) => i.clientMsgId));
    const mine = kept.filter((k) => k.accountId === accountId && !known.has(k.clientMsgId));
    mine.sort((a, b) => a.createdAtMs - b.createdAtMs);
    for (const k of mine) this.items.push({ ...k, photos: k.photos || [], voice: k.voice || null, state: 'waiting' });
    if (mine.length) this.onChange();
  }

  /** Queues a message (text, photos: Blob[], or one voice Blob) and tries to send it. */
  send(petitionId, text, photos = [], voice = null) {
    const item = {
      clientMsgId: newClientId('m'),
      accountId: this.conn.account?.id || '',
      petitionId,
      text,
      photos,
      voice,
      mediaIds: null,
      createdAtMs: Date.now(),
      state: 'sending',
    };
    this.items.push(item);
    this.keep(item);
    this.onChange();
    this.flush();
  }

  /** Sends what waits, in order; stops at the first item the connection fails. */
  async flush() {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const item of this.items.filter((i) => !i.acked && i.state !== 'failed')) {
        item.state = 'sending';
        this.onChange();
        try {
          for (let attempt = 1; ; attempt++) {
            if (!item.mediaIds) {
              const blobs = item.voice ? [item.voice] : item.photos;
              const ids = [];
              for (const b of blobs) ids.push((await this.conn.upload(b)).id);
              item.mediaIds = ids;
              if (ids.length) this.keep(item); // a reload sends without uploading again
            }
            try {
              await this.conn.request({
                sendMessage: { petitionId: item.petitionId, text: item.text, clientMsgId: item.clientMsgId, mediaIds: item.mediaIds },
              });
              break;
            } catch (e) {
              // Uploads no message used are collected after a day: an outbox kept that long
              // uploads its photos again.
              if (attempt > 1 || e.code !== 'ERROR_CODE_NOT_FOUND' || !item.mediaIds.length) throw e;
              item.mediaIds = null;
            }
          }
          item.acked = true;
          this.forget(item);
        } catch (e) {
          if (e instanceof ServerError && (e.code === 'DISCONNECTED' || e.code === 'ERROR_CODE_UNAVAILABLE')) {
            item.state = 'waiting';
            break;
          }
          item.state = 'failed';
          item.error = e.message;
          this.forget(item);
        }
      }
    } finally {
      this.busy = false;
      this.onChange();
    }
  }

  /** Messages of a petition still to show as pending (not yet in the timeline). */
  pending(petitionId, store) {
    const sent = new Set(store.timeline(petitionId).map((e) => e.clientMsgId).filter(Boolean));
    this.items = this.items.filter((i) => !(i.acked && sent.has(i.clientMsgId)));
    return this.items.filter((i) => i.petitionId === petitionId && !sent.has(i.clientMsgId));
  }
}

// ------------------------------------------------------------------ timeline

function transitionText(entry) {
  const tr = entry.transition;
  const parts = [t(tr.action)];
  if (tr.action === 'ACTION_RATE' && tr.rating) {
    parts.push(`${t('colon')}${t(tr.rating.level)}`);
    if (tr.rating.comment) parts.push(` (${tr.rating.comment})`);
  }
  if (tr.action === 'ACTION_ESCALATE' && tr.escalatedTo) {
    parts.push(` → ${tr.coBuildingUnit || t(tr.escalatedTo)}`);
  }
  if (tr.reason) parts.push(`${t('colon')}${tr.reason}`);
  return parts.join('');
}

function supervisionText(entry) {
  const s = entry.supervision;
  const level = s.level ? ` · ${t(s.level)}` : '';
  return `${t(s.deadline)} ${t(s.step)}${level}`;
}

/** Photos (thumbnails that open the full picture) and voice clips of an entry. */
function mediaOf(conn, media) {
  return media.map((m) => {
    if (m.kind === 'MEDIA_KIND_VOICE') {
      const audio = el('audio', { controls: true, preload: 'none', dataset: { mediaId: m.id } });
      conn.mediaUrl(m.id).then((url) => {
        audio.src = url;
      }, () => {});
      return el('div', { class: 'voice' }, icon('mic'), `${Math.max(1, Math.round((m.durationMs || 0) / 1000))}${t('seconds')}`, audio);
    }
    const img = el('img', {
      class: 'thumb',
      alt: t('photo'),
      width: m.thumbnailWidth || m.width || 160,
      height: m.thumbnailHeight || m.height || 120,
      dataset: { mediaId: m.id },
    });
    conn.mediaUrl(m.id, Boolean(m.thumbnailId)).then((url) => {
      img.src = url;
    }, () => {});
    img.addEventListener('click', () => showPhoto(conn, m.id));
    return img;
  });
}

function showPhoto(conn, id) {
  let dialog = $('photo-view');
  if (!dialog) {
    dialog = el('dialog', { id: 'photo-view', class: 'photo-view' },
      el('img', { alt: t('photo') }),
      el('form', { method: 'dialog' }, el('button', {}, t('close'))));
    document.body.append(dialog);
  }
  conn.mediaUrl(id).then((url) => {
    dialog.querySelector('img').src = url;
  }, () => {});
  dialog.showModal();
}

/**
 * Renders a petition's timeline into `box`: messages as bubbles (mine on the right, with a read
 * receipt), state changes and supervision steps as centred lines, then pending outbox messages.
 */
export function renderTimeline(box, { conn, store, outbox, petitionId, me }) {
  const readUpTo = store.readByOthers(petitionId, me);
  // At the bottom as the reader left it (boxes around the timeline may have just changed its size).
  const atBottom = box.watched ? box.stick : box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const nodes = store.timeline(petitionId).map((e) => {
    if (e.transition || e.supervision) {
      const who = e.supervision ? t('system') : e.authorName;
      return el('div', { class: `line${e.supervision ? ' supervision' : ''}`, dataset: { seq: e.seq } },
        el('span', {}, `${who} ${e.supervision ? supervisionText(e) : transitionText(e)}`),
        el('time', {}, clockTime(e.atMs, conn.serverNow())));
    }
    const mine = e.authorId === me;
    return el('div', { class: `msg ${mine ? 'mine' : 'theirs'}`, dataset: { seq: e.seq, testid: 'message' } },
      mine ? null : el('div', { class: 'author' }, e.authorName),
      e.text?.text ? el('div', { class: 'text' }, e.text.text) : null,
      e.media?.length ? el('div', { class: 'media' }, mediaOf(conn, e.media)) : null,
      el('div', { class: 'meta' },
        el('time', {}, clockTime(e.atMs, conn.serverNow())),
        mine ? el('span', { class: `receipt${readUpTo >= Number(e.seq) ? ' read' : ''}`, dataset: { testid: 'receipt' } },
          readUpTo >= Number(e.seq) ? t('read') : t('unread')) : null));
  });
  const pending = outbox.pending(petitionId, store).map((i) =>
    el('div', { class: `msg mine pending ${i.state}`, dataset: { testid: 'pending' } },
      i.text ? el('div', { class: 'text' }, i.text) : null,
      i.photos.length ? el('div', { class: 'text' }, icon('image'), ` ×${i.photos.length}`) : null,
      i.voice ? el('div', { class: 'text' }, icon('mic'), ` ${t('voice')}`) : null,
      el('div', { class: 'meta' }, t(i.state === 'waiting' ? 'waitingNetwork' : i.state === 'failed' ? 'failed' : 'sending'))));
  box.replaceChildren(...nodes, ...pending);
  const stick = atBottom || box.dataset.shown !== petitionId;
  if (stick) box.scrollTop = box.scrollHeight;
  box.dataset.shown = petitionId;
  // While the view sits at the bottom it stays there: when photos take their height as they load,
  // and when the box changes size (a phone's keyboard opening, the window turned or resized).
  box.stick = stick;
  if (!box.watched) {
    box.watched = true;
    box.addEventListener('scroll', () => {
      box.stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    });
    if ('ResizeObserver' in window) {
      new ResizeObserver(() => {
        if (box.stick) box.scrollTop = box.scrollHeight;
      }).observe(box);
    }
  }
  for (const img of box.querySelectorAll('img.thumb')) {
    img.addEventListener('load', () => {
      if (box.stick) box.scrollTop = box.scrollHeight;
    }, { once: true });
  }
}

/** Tells the others this account read the petition (only while the page is in view). */
export async function markRead(conn, store, petitionId, me) {
  const p = store.petitions.get(petitionId);
  if (!p || document.visibilityState !== 'visible') return;
  const last = Math.max(Number(p.lastSeq || 0), ...store.timeline(petitionId).map((e) => Number(e.seq)));
  if (last <= store.myMark(petitionId, me)) return;
  try {
    await conn.request({ markRead: { petitionId, seq: String(last) } });
    store.setMark({ petitionId, readerId: me, seq: String(last) });
  } catch {
    // Marked again on the next render.
  }
}

// ------------------------------------------------------------------ composer

/**
 * Hold-to-talk: recording runs while the button is held (MediaRecorder), and the clip goes to
 * `onClip(blob)` when it is released. Clips under 0.8 s are dropped.
 */
export function holdToTalk(button, onClip, onError) {
  let recorder = null;
  let chunks = [];
  let started = 0;
  let holding = false;
  const label = button.querySelector('.label') || button;
  const stop = () => {
    holding = false;
    button.classList.remove('recording');
    label.textContent = t('holdToTalk');
    if (recorder && recorder.state !== 'inactive') recorder.stop();
  };
  button.addEventListener('contextmenu', (e) => e.preventDefault());
  button.addEventListener('pointerdown', async (e) => {
    e.preventDefault();
    if (holding) return;
    holding = true;
    button.setPointerCapture?.(e.pointerId);
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      holding = false;
      onError(t('noMic'));
      return;
    }
    if (!holding) {
      stream.getTracks().forEach((tr) => tr.stop());
      onError(t('tooShort'));
      return;
    }
    const type = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/mp4'].find((m) => MediaRecorder.isTypeSupported(m));
    recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    chunks = [];
    recorder.ondataavailable = (ev) => ev.data.size && chunks.push(ev.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((tr) => tr.stop());
      const long = Date.now() - started >= 800;
      const blob = new Blob(chunks, { type: (recorder.mimeType || type || 'audio/webm').split(';')[0] });
      recorder = null;
      if (long && blob.size) onClip(blob);
      else onError(t('tooShort'));
    };
    started = Date.now();
    recorder.start();
    button.classList.add('recording');
    label.textContent = t('releaseToSend');
  });
  for (const name of ['pointerup', 'pointercancel', 'lostpointercapture']) button.addEventListener(name, stop);
}

/**
 * A message composer: text, photos from the camera or the gallery (previewed, removable), voice by
 * hold-to-talk. `onSend(text, photos)` and `onVoice(blob)` receive what the user sends.
 */
export function composer({ onSend, onVoice, onError, big = false, withSendButton = true }) {
  const photos = [];
  const previews = el('div', { class: 'previews', dataset: { testid: 'previews' } });
  const text = el('textarea', { rows: big ? 4 : 1, dataset: { testid: 'text', i18nPlaceholder: big ? 'whatHappened' : 'typeMessage' }, placeholder: t(big ? 'whatHappened' : 'typeMessage') });
  const showPreviews = () => {
    previews.replaceChildren(...photos.map((f, i) => {
      const url = URL.createObjectURL(f);
      return el('span', { class: 'preview' },
        el('img', { src: url, alt: t('photo') }),
        el('button', { type: 'button', class: 'remove', 'aria-label': '×', onclick: () => { photos.splice(i, 1); showPreviews(); } }, '×'));
    }));
  };
  const picker = (capture, key, testid) => {
    const input = el('input', { type: 'file', accept: 'image/*', capture: capture ? 'environment' : false, multiple: !capture, hidden: true, dataset: { testid } });
    input.addEventListener('change', () => {
      for (const f of input.files) if (photos.length < 9) photos.push(f);
      input.value = '';
      showPreviews();
    });
    return el('label', { class: 'tool' }, icon(capture ? 'camera' : 'image'), el('span', { dataset: { i18n: key } }, t(key)), input);
  };
  const talk = el('button', { type: 'button', class: 'tool talk', dataset: { testid: 'talk' } }, icon('mic'), el('span', { class: 'label', dataset: { i18n: 'holdToTalk' } }, t('holdToTalk')));
  if (onVoice) holdToTalk(talk, onVoice, onError);
  const sendButton = withSendButton ? el('button', { type: 'submit', class: 'send', dataset: { testid: 'send' } }, t('send')) : null;
  const form = el('form', { class: `composer${big ? ' big' : ''}` },
    previews,
    el('div', { class: 'row' }, text, sendButton),
    el('div', { class: 'tools' }, picker(true, 'camera', 'camera'), picker(false, 'gallery', 'gallery'), onVoice ? talk : null));
  const take = () => {
    const out = { text: text.value.trim(), photos: [...photos] };
    text.value = '';
    photos.length = 0;
    showPreviews();
    return out;
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const { text: body, photos: files } = { text: text.value.trim(), photos };
    if (!body && !files.length) return;
    onSend?.(take());
  });
  text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !big) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  return { form, take, text, photos };
}

// ------------------------------------------------------------------ page frame

/** Shows a short message at the bottom of the page. */
export function toast(text, kind = '') {
  let box = $('toasts');
  if (!box) document.body.append((box = el('div', { id: 'toasts', class: 'toasts', 'aria-live': 'polite' })));
  const item = el('div', { class: `toast ${kind}`, dataset: { testid: 'toast' } }, text);
  box.append(item);
  setTimeout(() => item.remove(), 6000);
  return item;
}

/** The connection status pill, the language button and the sign-in/out wiring of a page. */
export function frame({ handlers, onLang, allowed }) {
  const conn = new Connection({
    ...handlers,
    onStatus(s) {
      const status = $('status');
      status.dataset.state = s;
      status.textContent = t(s);
      handlers.onStatus?.(s);
    },
    async onSignedIn(account, again) {
      if (!allowed.includes(account.role)) {
        location.replace(homeOf(account));
        return;
      }
      $('sign-in-view').hidden = true;
      $('sign-out').hidden = false;
      await handlers.onSignedIn(account, again);
    },
    onSignedOut() {
      $('sign-in-view').hidden = false;
      $('sign-out').hidden = true;
      handlers.onSignedOut?.();
    },
  });
  const langButton = $('lang');
  const updateLang = () => {
    langButton.textContent = lang() === 'en' ? '中文' : 'English';
  };
  applyStrings();
  updateLang();
  langButton.addEventListener('click', () => {
    setLang(lang() === 'en' ? 'zh' : 'en');
    updateLang();
    const status = $('status');
    if (status.dataset.state) status.textContent = t(status.dataset.state);
    onLang();
  });
  $('sign-out').addEventListener('click', () => conn.signOut());
  $('sign-in').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    try {
      await conn.signIn(String(form.get('login')).trim(), String(form.get('password')));
      $('sign-in-error').textContent = '';
    } catch (e) {
      $('sign-in-error').textContent =
        e.code === 'ERROR_CODE_BAD_CREDENTIALS' ? t('badLogin') : e.code === 'DISCONNECTED' ? t('notConnected') : e.message;
    }
  });
  return conn;
}

/** Registers the service worker that caches the pages' shell (an installable app). */
export function registerServiceWorker() {
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js').catch(() => {});
}

export { ServerError, duration, t, clockTime, lang };
