// The Lianxin protocol from a browser: one WebSocket (subprotocol lianxin.v1, JSON text frames),
// requests with ids answered by replies, pushed frames handed to listeners, and reconnection with
// backoff that signs in again with the stored token. See docs/protocol.md.

const TOKEN_KEY = 'lianxin.token';

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

/**
 * A connection that stays up: on a drop it reconnects (0.5 s, doubling to 15 s), signs in again
 * with the token and calls `onSignedIn` so the page can re-subscribe.
 * Listeners: onStatus(status: 'connecting'|'online'|'offline'), onSignedIn(account),
 * onEvent(event), onBoardUpdate(board), onSignedOut().
 */
export class Connection {
  constructor(handlers = {}) {
    this.handlers = handlers;
    this.nextId = 1;
    this.pending = new Map();
    this.ws = null;
    this.backoff = 500;
    this.account = null;
    this.closed = false;
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

  /** Opens the socket; resolves once it is open (and signed in, when a token is stored). */
  connect() {
    this.status('connecting');
    return new Promise((resolve) => {
      const ws = new WebSocket(socketUrl(), 'lianxin.v1');
      this.ws = ws;
      ws.onopen = async () => {
        this.backoff = 500;
        this.status('online');
        if (this.token) {
          try {
            const r = await this.request({ authenticate: { token: this.token } });
            this.account = r.signedIn.account;
            await this.handlers.onSignedIn?.(this.account);
          } catch (e) {
            if (e instanceof ServerError) {
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
        for (const { reject } of this.pending.values()) reject(new ServerError('DISCONNECTED', 'connection lost'));
        this.pending.clear();
        this.status('offline');
        if (!this.closed) {
          setTimeout(() => this.connect(), this.backoff);
          this.backoff = Math.min(this.backoff * 2, 15000);
        }
        resolve();
      };
    });
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
      this.handlers.onEvent?.(frame.event);
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
    this.account = r.signedIn.account;
    await this.handlers.onSignedIn?.(this.account);
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
    this.handlers.onSignedOut?.();
  }

  /** Drops the connection as a network failure would (tests use it); reconnection follows. */
  drop() {
    this.ws?.close();
  }
}
