/* y.js: the Yespo collector's browser script (README: "Browsers: the tracking script").
 * The page talks to it only through the global command function: yc("name", ...args).
 * Each event is built when its command is called, kept in a bounded localStorage outbox
 * shared by the tabs of the site, and sent in small batches; whatever the collector has
 * not confirmed is sent again later (it deduplicates by messageId). Never throws. */
(function (w, d) {
  "use strict";
  const stub = w.yc;
  if (stub && stub.version) return; // included twice: the first copy is in charge

  const V = "1.0.0",
    BATCH = 20, // events per request: the collector's browser batch limit
    BYTES = 6e4, // request body: sendBeacon and keepalive fetch allow 64 KB in flight
    EVENT = 3e4, // Yespo takes 20 KB per event: a bigger one is dropped when it is made
    KEEP = 200, // outbox bound, oldest dropped
    DELAY = 300, // ms to gather the calls of a page load into one batch
    LOCK = 1e4, // ms a tab may hold the send lock; also the request timeout
    QK = "yc_q", // the outbox: one key per event, "yc_q<order><messageId>", so that tabs
    // adding and removing events never write over each other's changes
    LK = "yc_l", // the cross-tab send lock: "<tab> <until>"
    RK = "yc_r", // the last cart's recycleStateId
    CK = "yc_c", // consent: "1" given, "0" refused
    OK = "yc_o"; // "1": opted out

  let cfg, // init's options; undefined until init
    held = [], // outbox entries waiting for init or consent (memory only)
    memq = [], // outbox entries localStorage could not take
    seq = 0,
    timer,
    busy,
    fails = 0,
    last, // URL of the last page view
    ref = d.referrer;
  const sent = new Set(), // messageIds posted from this page, outcome unknown
    tab = rid(),
    log = (...a) => cfg && cfg.debug && console.log("[yc]", ...a),
    safe = (f) =>
      function () {
        try {
          return f.apply(this, arguments);
        } catch (e) {
          log(e);
        }
      },
    size = (s) => new Blob([s]).size;

  function rid() {
    const a = new Uint8Array(16);
    try {
      crypto.getRandomValues(a);
    } catch (e) {
      a.forEach((_, i) => (a[i] = Math.random() * 256));
    }
    return Array.from(a, (b) => (b | 256).toString(16).slice(1)).join("");
  }

  function get(k) {
    try {
      return localStorage.getItem(k);
    } catch (e) {}
  }
  function set(k, v) {
    try {
      v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v);
      return 1;
    } catch (e) {}
  }

  // The outbox, oldest first: [[key, event], ...].
  function load() {
    let q = [];
    try {
      q = Object.keys(localStorage)
        .filter((k) => k.startsWith(QK))
        .map((k) => [k, JSON.parse(localStorage.getItem(k))])
        .filter((x) => x[1]);
    } catch (e) {}
    return q.concat(memq).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }
  function put(x) {
    set(x[0], JSON.stringify(x[1])) || memq.push(x);
  }
  function del(x) {
    set(x[0]);
    memq = memq.filter((y) => y != x);
  }

  // 1: send; 0: hold in memory (before init, or consent pending); -1: drop.
  function state() {
    const c = get(CK);
    return get(OK) || c == "0" ? -1 : cfg && (c || !cfg.requireConsent) ? 1 : 0;
  }

  // Held events go to the outbox once they may be sent; or away, if they never may.
  function pump() {
    const s = state();
    if (s < 0) held = [];
    if (s > 0 && held.length) {
      held.forEach(put);
      held = [];
      load().slice(0, -KEEP).forEach(del); // the bound: the oldest go
      sched(DELAY);
    }
  }

  function drop() {
    held = [];
    load().forEach(del);
  }

  function emit(type, props, contact) {
    const e = { type, messageId: rid(), timestamp: Date.now() };
    if (contact) e.contact = contact;
    else {
      if (props) e.properties = props;
      e.context = { page: { url: location.href, referrer: ref, title: d.title } };
    }
    const s = JSON.stringify(e); // a copy: later changes by the page do not reach it
    if (size(s) > EVENT) return log("event too big, dropped", e);
    if (state() < 0) return;
    held.push([QK + (e.timestamp * 1e3 + (seq++ % 1e3)) + e.messageId, JSON.parse(s)]);
    log(type, e);
    pump();
  }

  function aid() {
    let id = (d.cookie.match(/(?:^|;\s*)yc_aid=([^;]+)/) || [])[1];
    if (!id)
      d.cookie =
        "yc_aid=" +
        (id = rid()) +
        "; path=/; max-age=31536000; samesite=lax" +
        (location.protocol == "https:" ? "; secure" : "");
    return id;
  }

  // The first events of `q` that fit one request: { n, b (the body) }.
  function pack(q) {
    for (let n = Math.min(q.length, BATCH); ; n--) {
      const batch = q.slice(0, n),
        b = JSON.stringify({ siteKey: cfg.siteKey, anonymousId: aid(), v: V, batch });
      if (n < 2 || size(b) <= BYTES) return { n, b };
    }
  }

  // Two tabs must not send the same outbox at once: a short lock in localStorage.
  function lock(take) {
    const [owner, until] = (get(LK) || "").split(" "),
      now = Date.now();
    if (!take) return owner == tab && set(LK);
    if (owner && owner != tab && until > now) return false;
    set(LK, tab + " " + (now + LOCK));
    return (get(LK) || tab).startsWith(tab); // no localStorage: no other tab to fear
  }

  function sched(ms) {
    if (!timer)
      timer = setTimeout(
        safe(() => {
          timer = 0;
          flush();
        }),
        ms
      );
  }

  async function flush() {
    if (busy) return; // the request in flight goes on with the rest when it is done
    busy = 1;
    let next;
    try {
      next = await send();
    } catch (e) {
      log(e);
    }
    busy = 0;
    next == 1 ? flush() : next && sched(next);
  }

  // One request. Returns 1 to go on at once, a delay in ms to try again later, or nothing.
  async function send() {
    if (state() < 1 || !load().length) return void lock();
    if (!lock(1)) return 1e3; // another tab is sending
    // Two tabs may have written the lock at the same moment: the last write won.
    await new Promise((r) => setTimeout(r, 50));
    const q = load(),
      events = q.map((x) => x[1]);
    if (state() < 1 || !q.length) return void lock();
    if (!lock(1)) return 1e3;
    const p = pack(events),
      ids = events.slice(0, p.n).map((e) => e.messageId),
      ac = w.AbortController && new AbortController(),
      t = setTimeout(() => ac && ac.abort(), LOCK);
    let s = 0,
      j;
    ids.forEach((i) => sent.add(i));
    try {
      const r = await fetch(cfg.endpoint, {
        method: "POST",
        body: p.b,
        keepalive: true,
        credentials: "include",
        signal: ac && ac.signal,
      });
      s = r.status;
      j = await r.json();
    } catch (e) {}
    clearTimeout(t);
    if (!s || s == 408 || s == 429 || s > 499) {
      // not stored: keep them, try again in 1 s, 2 s, ... 32 s (and on the next page)
      ids.forEach((i) => sent.delete(i));
      lock();
      if (fails < 6) fails++;
      return 500 << fails;
    }
    fails = 0; // a final answer (2xx, or 400/403/413: resending would not help)
    log(s, j);
    q.slice(0, p.n).forEach(del);
    return 1;
  }

  // The page goes away (or to the background): everything pending goes by beacon, and
  // stays in the outbox until a later page gets a final answer for it.
  function beacon(gone) {
    if (state() < 1) return;
    const q = load()
      .map((x) => x[1])
      .filter((e) => !sent.has(e.messageId));
    while (q.length) {
      const p = pack(q);
      if (!navigator.sendBeacon(cfg.endpoint, p.b)) break;
      q.splice(0, p.n).forEach((e) => sent.add(e.messageId));
    }
    if (gone) lock();
  }

  const spa = safe(() => {
    if (location.href != last) {
      ref = last;
      cmd.page();
    }
  });

  const cmd = {
    init(o) {
      if (cfg || !o || !o.siteKey || !o.endpoint) return; // once, and complete
      cfg = Object.assign({ autoPage: true }, o);
      addEventListener("pagehide", safe(() => beacon(1)));
      d.addEventListener(
        "visibilitychange",
        safe(() => d.visibilityState == "hidden" && beacon())
      );
      if (cfg.autoPage) {
        ["pushState", "replaceState"].forEach((k) => {
          const f = history[k];
          history[k] = function () {
            const r = f.apply(this, arguments);
            spa();
            return r;
          };
        });
        addEventListener("popstate", spa);
        addEventListener("hashchange", spa);
        cmd.page();
      }
      pump();
      sched(DELAY); // what earlier pages left in the outbox
    },
    identify: (c) => c && emit("identify", 0, c),
    page(p) {
      emit("pageViewed", Object.assign({ location: (last = location.href) }, p));
    },
    productViewed: (p) => emit("productViewed", p),
    productCategoryViewed: (p) => emit("productCategoryViewed", p),
    cartUpdated(p) {
      // every cart state gets its own id; the order made from the last one carries it
      const r = rid();
      set(RK, r);
      emit("cartUpdated", Object.assign({}, p, { recycleStateId: r }));
    },
    orderCreated(p) {
      const o = { status: "INITIALIZED", date: new Date().toISOString() };
      o.recycleStateId = get(RK) || undefined;
      emit("orderCreated", Object.assign(o, p));
      set(RK);
    },
    track: (type, p) => typeof type == "string" && emit(type, p),
    consent(yes) {
      set(CK, yes ? "1" : "0");
      yes ? pump() : drop();
    },
    optOut() {
      set(OK, "1");
      drop();
    },
    optIn: () => set(OK),
  };

  function yc(name, ...args) {
    try {
      cmd.hasOwnProperty(name) ? cmd[name](...args) : log("unknown command", name);
    } catch (e) {
      log(e);
    }
  }
  yc.version = V;
  w.yc = yc;
  // Calls made before the script loaded, then calls through a kept reference to the stub.
  ((stub && stub.q) || []).forEach((a) => yc(...a));
  if (stub) stub.q = { push: (a) => yc(...a) };
})(window, document);
