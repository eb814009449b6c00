// The Lianxin protocol from a browser: one WebSocket (subprotocol lianxin.v1, JSON text frames),
// requests with ids answered by replies, pushed frames handed to listeners, reconnection with
// backoff that signs in again with the stored token, the account's feed resumed from its cursor
// (events deduplicated by cursor), keep-alive pings that notice a dead link, and media over HTTP.
// See docs/protocol.md and docs/media.md.

const TOKEN_KEY = 'lianxin.token';
const CURSOR_KEY = 'lianxin.cursor.';

/** The server's WebSocket URL, next to the page. */
export function socketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/** An error reply from the server: `code` is the ErrorCode name, e.g. ERROR_CODE_FORBIDDEN. */
export class ServerError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/** A fresh client message id (for clientMsgId): resends with the same id are never stored twice. */
export function newClientId(prefix = 'web') {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return `${prefix}-${Date.now().toString(36)}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** Where a signed-in account belongs: residents at /, grid staff at /worker, supervisors at /board. */
export function homeOf(account) {
  switch (account?.role) {
    case 'ROLE_RESIDENT':
      return '/';
    case 'ROLE_WORKER':
    case 'ROLE_GRID_HEAD':
      return '/worker';
    default:
      return '/board';
  }
}

const PING_EVERY_MS = 20000;
const PING_TIMEOUT_MS = 10000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;

/**
 * A connection that stays up: on a drop it reconnects (0.5 s, doubling to 15 s; at once when the
 * browser comes back online), signs in again with the token and calls `onSignedIn` so the page can
 * reload what it shows and call `subscribe()`, which resumes the feed after the last cursor seen.
 * Listeners: onStatus(status: 'connecting'|'online'|'offline'), onSignedIn(account, again),
 * onEvent(event, { fresh }), onBoardUpdate(board), onSignedOut(), onSubscribed().
 * `fresh` is false for the backlog a first-ever subscription replays (nothing to alert about).
 */
export class Connection {
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
    this.backoff = BACKOFF_FIRST_MS;
    this.retryTimer = null;
    this.account = null;
    this.closed = false;
    this.signedInOnce = false;
    this.cursor = 0; // the last event cursor processed
    this.replayUpTo = 0; // events up to this cursor are an old backlog (first subscription)
    this.clockOffset = 0; // server time minus Date.now()
    this.connected = false;
    this.pinger = null;
    addEventListener('online', () => this.retryNow());
    addEventListener('offline', () => {
      if (this.ws) this.abandon();
    });
  }

  get token() {
    return localStorage.getItem(TOKEN_KEY) || '';
  }

  set token(value) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  }

  status(s) {
    this.handlers.onStatus?.(s);
  }

  /** The server's clock now, in milliseconds (deadlines are in the server's time). */
  serverNow() {
    return Date.now() + this.clockOffset;
  }

  /** Opens the socket; resolves once it is open (and signed in, when a token is stored). */
  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.status('connecting');
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(socketUrl(), 'lianxin.v1');
      } catch {
        this.closedSocket();
        resolve();
        return;
      }
      this.ws = ws;
      ws.onopen = async () => {
        this.backoff = BACKOFF_FIRST_MS;
        this.connected = true;
        this.startPinging();
        this.status('online');
        this.syncClock();
        if (this.token) {
          try {
            const r = await this.request({ authenticate: { token: this.token } });
            await this.signedIn(r.signedIn.account);
          } catch (e) {
            if (e instanceof ServerError && e.code === 'ERROR_CODE_BAD_CREDENTIALS') {
              this.token = '';
              this.account = null;
              this.handlers.onSignedOut?.();
            }
          }
        }
        resolve();
      };
      ws.onmessage = (m) => this.onFrame(m.data);
      ws.onclose = () => {
        if (this.ws === ws) this.closedSocket();
        resolve();
      };
    });
  }

  /** The socket is gone: fail what waits, say so, and try again after the backoff. */
  closedSocket() {
    this.ws = null;
    this.connected = false;
    clearInterval(this.pinger);
    for (const { reject } of this.pending.values()) reject(new ServerError('DISCONNECTED', 'connection lost'));
    this.pending.clear();
    this.status('offline');
    if (!this.closed && !this.retryTimer) {
      this.retryTimer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    }
  }

  /** Gives up on the current socket at once (a dead link may take minutes to report its close). */
  abandon() {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close();
    } catch {
      // Closing a socket that never opened: nothing to do.
    }
    this.closedSocket();
  }

  /** Reconnects now rather than after the backoff (the browser is back online). */
  retryNow() {
    if (this.closed || this.ws) return;
    this.backoff = BACKOFF_FIRST_MS;
    this.connect();
  }

  startPinging() {
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      const timer = setTimeout(() => {
        if (this.ws === ws) this.abandon();
      }, PING_TIMEOUT_MS);
      this.syncClock().finally(() => clearTimeout(timer));
    }, PING_EVERY_MS);
  }

  async syncClock() {
    try {
      const sent = Date.now();
      const r = await this.request({ ping: {} });
      const back = Date.now();
      this.clockOffset = Number(r.pong.serverTimeMs) - (sent + back) / 2;
    } catch {
      // The close handler takes care of a lost connection.
    }
  }

  async signedIn(account) {
    const again = this.signedInOnce && this.account?.id === account.id;
    this.account = account;
    this.signedInOnce = true;
    const stored = Number(localStorage.getItem(CURSOR_KEY + account.id) || 0);
    if (!again) this.cursor = stored;
    await this.handlers.onSignedIn?.(account, again);
  }

  /**
   * Subscribes to the account's feed after the last cursor processed. The first subscription of
   * an account on this device (no stored cursor) replays the whole feed without alerting.
   */
  async subscribe() {
    const firstEver = !localStorage.getItem(CURSOR_KEY + this.account.id);
    let r;
    try {
      r = await this.request({ subscribe: { afterCursor: String(this.cursor) } });
    } catch (e) {
      if (!(e instanceof ServerError) || e.code !== 'ERROR_CODE_INVALID_ARGUMENT') throw e;
      // The cursor is ahead of this feed: another database. Start again from the beginning.
      this.cursor = 0;
      r = await this.request({ subscribe: { afterCursor: '0' } });
    }
    const head = Number(r.subscribed.headCursor || 0);
    if (firstEver) {
      this.replayUpTo = head;
      this.saveCursor();
    }
    this.handlers.onSubscribed?.(head);
    return head;
  }

  saveCursor() {
    if (this.account) localStorage.setItem(CURSOR_KEY + this.account.id, String(this.cursor));
  }

  onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.reply) {
      const waiting = this.pending.get(String(frame.reply.id));
      if (!waiting) return;
      this.pending.delete(String(frame.reply.id));
      if (frame.reply.error) waiting.reject(new ServerError(frame.reply.error.code, frame.reply.error.message));
      else waiting.resolve(frame.reply);
    } else if (frame.event) {
      const cursor = Number(frame.event.cursor || 0);
      // Exactly once: an event at or before the last cursor processed was handled already.
      if (cursor && cursor <= this.cursor) return;
      if (cursor) {
        this.cursor = cursor;
        this.saveCursor();
      }
      const fresh = cursor > this.replayUpTo;
      if (fresh && frame.event.atMs) {
        // A live event is stamped with the server's clock: keep our idea of its time current.
        this.clockOffset = Math.max(this.clockOffset, Number(frame.event.atMs) - Date.now());
      }
      this.handlers.onEvent?.(frame.event, { fresh });
    } else if (frame.boardUpdate) {
      this.handlers.onBoardUpdate?.(frame.boardUpdate.board);
    }
  }

  /** Sends one request (an object with one request field) and resolves with its reply. */
  request(body) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ServerError('DISCONNECTED', 'not connected'));
    }
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, ...body }));
    });
  }

  /** Signs in with login and password; keeps the token for reconnections. */
  async signIn(login, password) {
    const r = await this.request({ signIn: { login, password, device: navigator.userAgent.slice(0, 60) } });
    this.token = r.signedIn.token;
    await this.signedIn(r.signedIn.account);
    return this.account;
  }

  /** Registers a resident account against an address; signs in as it. */
  async register(fields) {
    const r = await this.request({ register: { ...fields, device: navigator.userAgent.slice(0, 60) } });
    this.token = r.signedIn.token;
    await this.signedIn(r.signedIn.account);
    return this.account;
  }

  /** Signs out and forgets the token. */
  async signOut() {
    try {
      await this.request({ signOut: {} });
    } catch {
      // Gone already: forgetting the token is what matters.
    }
    this.token = '';
    this.account = null;
    this.signedInOnce = false;
    this.handlers.onSignedOut?.();
  }

  /** Drops the connection as a network failure would (tests use it); reconnection follows. */
  drop() {
    this.abandon();
  }

  /** Uploads a photo or voice clip (POST /media); resolves with its MediaAttachment. */
  async upload(blob) {
    let response;
    try {
      response = await fetch('/media', {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': (blob.type || '').split(';')[0] || 'application/octet-stream' },
        body: blob,
      });
    } catch {
      throw new ServerError('DISCONNECTED', 'upload failed: no connection');
    }
    let body = {};
    try {
      body = await response.json();
    } catch {
      // A refusal without JSON (401): handled below.
    }
    if (!response.ok) throw new ServerError(body.code || `HTTP_${response.status}`, body.message || response.statusText);
    return body;
  }

  /**
   * A blob: URL for a media item or its thumbnail (the fetch carries the Authorization header,
   * which <img src> cannot). Cached per page.
   */
  mediaUrl(id, thumbnail = false) {
    const key = `${id}${thumbnail ? '/thumbnail' : ''}`;
    this.mediaCache ??= new Map();
    if (!this.mediaCache.has(key)) {
      const loading = fetch(`/media/${key}`, { headers: { Authorization: `Bearer ${this.token}` } }).then(async (r) => {
        if (!r.ok) throw new ServerError(`HTTP_${r.status}`, 'media not available');
        return URL.createObjectURL(await r.blob());
      });
      loading.catch(() => this.mediaCache.delete(key));
      this.mediaCache.set(key, loading);
    }
    return this.mediaCache.get(key);
  }
}
