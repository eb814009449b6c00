// The service worker of the Lianxin pages (served at /sw.js, scope /): keeps the pages' shell
// (HTML, scripts, styles, icons) in a cache so the app opens without a network, and refreshes it
// from the network whenever there is one (network first: a new server version shows at once).
// The WebSocket, media and everything else go straight to the network.

const CACHE = 'lianxin-shell-v1';
const SHELL = [
  '/',
  '/worker',
  '/board',
  '/manifest.webmanifest',
  '/web/style.css',
  '/web/lianxin.js',
  '/web/i18n.js',
  '/web/app.js',
  '/web/resident.js',
  '/web/worker.js',
  '/web/board.js',
  '/web/icon-192.png',
  '/web/icon-512.png',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== location.origin) return;
  const path = url.pathname;
  if (!(SHELL.includes(path) || path.startsWith('/web/'))) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(path, copy));
        }
        return response;
      })
      .catch(() => caches.match(path).then((hit) => hit || Response.error())),
  );
});

// A tap on an alert opens (or focuses) the worker's app at the petition.
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = event.notification.data?.url || '/worker';
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((windows) => {
      const open = windows.find((w) => new URL(w.url).pathname === new URL(url, location.origin).pathname);
      if (open) {
        open.navigate(url);
        return open.focus();
      }
      return self.clients.openWindow(url);
    }),
  );
});
