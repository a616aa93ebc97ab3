/*
 * The JavaScript player: an enhancement of the page's plain <video src="/stream.mp4">.
 *
 * With Media Source Extensions it plays the HLS segments itself, starting near the live edge,
 * and keeps every viewer at the same point of the stream: the server publishes one timeline
 * (/api/playlist: each segment's media start time and the server time at which media time 0
 * was live), the player measures the server's clock (/api/clock: seconds on a scale private to
 * the server process, never the host's wall clock) and steers its playback rate
 * gently towards "server now - origin - delay". It can scrub back through the segments the
 * playlist still lists, and return to live. When the source writes parts (a fragment every
 * ~200 ms), the player follows the segment in progress fragment by fragment (/fragment: the
 * server answers each request the moment that fragment exists), so it plays under a second
 * behind the encoder instead of a segment and more. Without MSE, or when it fails, the page's own
 * /stream.mp4 keeps playing. ?player=plain or ?player=mse picks one explicitly; the choice is
 * carried in same-origin links and forms, never in a cookie.
 *
 * Title, live light, uptime and viewer count follow the /events push channel.
 * No inline script anywhere: the page passes data in data-attributes.
 */
(function () {
  'use strict';

  var ROOT = document.getElementById('player-controls');
  if (!ROOT) { return; }

  var PARAM = 'player';
  var JUMP_SECONDS = 1.0;        // further than this from the target: seek instead of steering
  var DEADBAND_SECONDS = 0.03;   // closer than this: play at normal speed
  var RATE_GAIN = 0.5;           // playback-rate change per second of error
  var RATE_LIMIT = 0.1;          // at most 10% faster or slower: gentle enough to listen to
  var READ_AHEAD_SECONDS = 8;    // while scrubbed back, fetch this far ahead of the position
  var BACK_BUFFER_SECONDS = 30;  // keep this much already-played media, drop the rest
  var STALL_EXTRA_SECONDS = 0.5; // a viewer that stalls moves back this much, up to the cap
  var STALL_EXTRA_LIMIT = 6;
  var START_TIMEOUT_MS = 20000;  // live but nothing playing by then: MSE is not working here
  var CLOCK_SAMPLES = 5;
  var CLOCK_RESYNC_MS = 60000;
  // Renditions: a segment that takes more than this share of its own duration to arrive means
  // the connection cannot carry this quality; step down at once (before the buffer runs dry).
  var SLOW_FETCH_SHARE = 0.7;
  var UP_HEADROOM = 2.0;         // step up when measured throughput is this many times the next rate
  var UP_AFTER_SEGMENTS = 3;     // ... for this many segments in a row
  var UP_HOLD_MS = 15000;        // and never sooner than this after stepping down
  // A fetch not done after this long is lost (a circuit died under it): ask again. Segments get
  // a few times their duration, at least FETCH_TIMEOUT_MS; the init segment FETCH_TIMEOUT_MS.
  var FETCH_TIMEOUT_MS = 4000;
  var FETCH_TIMEOUT_DURATIONS = 3;
  var GAP_LIMIT_SECONDS = 2.5;   // stuck before a hole in the buffer at most this wide: jump it
  var FOLLOW_PAUSE_MS = 30000;   // /fragment refused (429): follow whole segments this long
  // A request per part keeps up only while the round trip is short against a part: over Tor
  // (0.5-1 s) it stalled; such a viewer follows whole segments.
  var FOLLOW_MAX_TRIP = 0.15;
  var QUALITY_KEY = 'livestream-quality';

  /* ---------------------------------------------------------------- small helpers */

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === 'text') { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function wallSeconds() { return (performance.timeOrigin + performance.now()) / 1000; }

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  /** The viewer's token rides on video requests so the server counts this viewer as watching. */
  function withToken(url) {
    var side = document.querySelector('[data-token]');
    var token = side ? side.getAttribute('data-token') : new URLSearchParams(location.search).get('token');
    if (!token) { return url; }
    return url + (url.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(token);
  }

  function getJson(url, signal) {
    return fetch(url, { cache: 'no-store', credentials: 'same-origin', signal: signal })
      .then(function (response) {
        if (!response.ok) { throw new Error(url.split('?')[0] + ' answered ' + response.status); }
        return response.json();
      });
  }

  function formatClock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    return h + ':' + (m < 10 ? '0' : '') + m + ':' + (s < 10 ? '0' : '') + s;
  }

  /* ------------------------------------------- the player choice, kept in the URLs */

  function playerChoice() {
    var value = new URLSearchParams(location.search).get(PARAM);
    return value === 'mse' || value === 'plain' ? value : null;
  }

  function urlWithChoice(href, choice) {
    var url = new URL(href, location.href);
    if (url.origin !== location.origin) { return null; }
    url.searchParams.set(PARAM, choice);
    return url;
  }

  /** Add ?player= to same-origin links and forms in `scope`, so the choice follows the viewer. */
  function carryChoice(scope, choice) {
    scope.querySelectorAll('a[href]').forEach(function (link) {
      var raw = link.getAttribute('href');
      if (!raw || raw.charAt(0) === '#' || /^(javascript|mailto|data):/i.test(raw)) { return; }
      if (link.hasAttribute('data-player-switch')) { return; }  // it names the other player
      var url = urlWithChoice(link.href, choice);
      if (url && url.href !== link.href) { link.href = url.href; }
    });
    scope.querySelectorAll('form').forEach(function (form) {
      if ((form.getAttribute('method') || 'get').toLowerCase() === 'get') {
        // A GET form replaces the action's query with its fields: carry it as a field.
        var field = form.querySelector('input[name="' + PARAM + '"]');
        if (!field) {
          form.appendChild(el('input', { type: 'hidden', name: PARAM, value: choice }));
        }
      } else {
        var url = urlWithChoice(form.action, choice);
        if (url) { form.action = url.href; }
      }
    });
  }

  function keepChoice(choice) {
    if (!choice) { return; }
    carryChoice(document, choice);
    new MutationObserver(function () { carryChoice(document, choice); })
      .observe(document.body, { childList: true, subtree: true });
    function frame(iframe) {
      try {
        if (iframe.contentDocument && iframe.contentDocument.body) {
          carryChoice(iframe.contentDocument, choice);
        }
      } catch (e) { /* another origin: not ours to touch */ }
    }
    document.querySelectorAll('iframe').forEach(function (iframe) {
      frame(iframe);
      iframe.addEventListener('load', function () { frame(iframe); });
    });
  }

  /* ------------------------------------------------------------- the server clock */

  /** Server time in this browser, NTP style: the sample with the shortest round trip wins. */
  function ServerClock() {
    this.offset = 0;
    this.roundTrip = Infinity;
    this.synced = false;
    this.tried = false;          // the first sync is over, whether or not a sample came back
  }

  ServerClock.prototype.sync = function () {
    var self = this, best = null, tries = 0;
    function sample() {
      var sent = wallSeconds();
      return getJson('/api/clock').then(function (data) {
        var received = wallSeconds(), rtt = received - sent;
        if (!best || rtt < best.rtt) { best = { rtt: rtt, offset: data.now - (sent + received) / 2 }; }
      }).catch(function () { /* one lost sample is fine */ }).then(function () {
        tries += 1;
        return tries < CLOCK_SAMPLES ? sample() : null;
      });
    }
    return sample().then(function () {
      if (best) { self.offset = best.offset; self.roundTrip = best.rtt; self.synced = true; }
      self.tried = true;
      return self;
    });
  };

  ServerClock.prototype.now = function () { return wallSeconds() + this.offset; };

  /* ------------------------------------------------ the timeline, by long polling */

  function TimelineFeed(onTimeline) {
    this.onTimeline = onTimeline;
    this.current = null;
    this.controller = null;
    this.stopped = false;
    this.quality = '';           // the rendition whose segments the player appends
  }

  /** Follow another rendition's timeline from now on (asked for at once, no long poll). */
  TimelineFeed.prototype.switchTo = function (quality) {
    if (quality === this.quality) { return; }
    this.quality = quality;
    this.current = null;
    this.poke();
  };

  TimelineFeed.prototype.start = function () {
    var self = this, failures = 0;
    (function loop() {
      if (self.stopped) { return; }
      var tl = self.current, query = '?quality=' + encodeURIComponent(self.quality);
      if (tl) {
        var last = tl.segments.length ? tl.segments[tl.segments.length - 1].sequence : -1;
        query += '&gen=' + tl.generation + '&after=' + last + '&online=' + (tl.online ? 1 : 0);
      }
      var controller = self.controller = new AbortController();
      getJson(withToken('/api/playlist' + query), controller.signal).then(function (next) {
        failures = 0;
        self.current = next;
        self.onTimeline(next);
        loop();
      }).catch(function (error) {
        if (error && error.name === 'AbortError' && !self.current) { loop(); return; }  // switched
        failures += 1;
        sleep(Math.min(5000, 500 * failures)).then(loop);
      });
    })();
  };

  /** Ask again at once (the push channel said something changed). */
  TimelineFeed.prototype.poke = function () {
    if (this.controller) { this.controller.abort(); }
  };

  /** The live edge in media time: what is being captured now, as far as the server knows. */
  function liveEdge(tl, clock) {
    if (!tl || !tl.segments.length) { return null; }
    var last = tl.segments[tl.segments.length - 1], newestEnd = last.start + last.duration;
    if (tl.origin === null || tl.origin === undefined || !clock.synced) { return newestEnd; }
    return clock.now() - tl.origin;
  }

  /* ------------------------------------------------------------------ the MSE player */

  function MsePlayer(video, clock, ui, onFail) {
    this.video = video;
    this.clock = clock;
    this.ui = ui;
    this.onFail = onFail;
    this.tl = null;
    this.generation = null;
    this.mediaSource = null;
    this.buffer = null;
    this.appended = new Map();   // sequence -> segment, what this source buffer holds
    this.missing = new Set();    // sequences the server no longer had
    this.busy = false;
    this.started = false;
    this.live = true;            // following the shared target, or scrubbed/paused (DVR)
    this.extraDelay = 0;
    this.ownSeek = false;
    this.lastSeekAt = 0;
    this.failures = 0;
    this.onlineSince = null;
    this.dead = false;
    this.quality = null;         // the rendition the source buffer was last given an init of
    this.codecs = null;
    this.auto = true;            // choose the rendition by measured throughput
    this.upStreak = 0;
    this.lastDownAt = -Infinity;
    this.throughput = null;      // bits per second, the last segment fetch
    this.wanted = null;          // a rendition asked for: nothing is fetched until its timeline comes
    this.onQuality = null;       // (name) -> ask the feed for that rendition's timeline
    this.follow = null;          // following the live edge: {sequence, index} of the next fragment
    this.followAfter = 0;        // refused as too busy: whole segments until then (ms)
    this.fragments = 0;          // fragments appended while following (shown in data-fragments)
    this.bindVideo();
  }

  MsePlayer.supported = function (codecs) {
    var type = 'video/mp4; codecs="' + (codecs || 'avc1.42e01e,mp4a.40.2') + '"';
    return !!(window.MediaSource && MediaSource.isTypeSupported(type));
  };

  MsePlayer.prototype.bindVideo = function () {
    var self = this, video = this.video;
    this.handlers = {
      seeking: function () {
        if (self.ownSeek || !self.started) { return; }
        // The viewer used the video's own seek bar: live again only if they landed there.
        self.live = Math.abs(video.currentTime - self.target()) < JUMP_SECONDS;
      },
      seeked: function () { self.ownSeek = false; self.pump(); },
      pause: function () { if (self.started && !video.ended) { self.live = false; } },
      play: function () { if (!self.started) { self.live = true; } },
      waiting: function () {
        // A stall while following live: this viewer needs more room behind the edge.
        if (self.live && self.started && !video.seeking && performance.now() - self.lastSeekAt > 2000) {
          self.extraDelay = Math.min(STALL_EXTRA_LIMIT, self.extraDelay + STALL_EXTRA_SECONDS);
        }
      },
      error: function () { self.fail('the browser could not decode the stream'); }
    };
    Object.keys(this.handlers).forEach(function (name) { video.addEventListener(name, self.handlers[name]); });
    this.timer = setInterval(function () { self.tick(); }, 250);
  };

  MsePlayer.prototype.destroy = function () {
    var self = this;
    this.dead = true;
    clearInterval(this.timer);
    Object.keys(this.handlers).forEach(function (name) { self.video.removeEventListener(name, self.handlers[name]); });
    this.detach();
  };

  MsePlayer.prototype.fail = function (reason) {
    if (this.dead) { return; }
    this.destroy();
    this.onFail(reason);
  };

  /** A fresh MediaSource for a (new) generation of the stream. */
  MsePlayer.prototype.attach = function (tl) {
    var self = this;
    this.detach();
    if (!MsePlayer.supported(tl.codecs)) {
      this.fail('this browser cannot play ' + (tl.codecs || 'the stream') + ' with MSE');
      return;
    }
    this.generation = tl.generation;
    this.ui.root.dataset.generation = String(tl.generation);
    this.appended = new Map();
    this.missing = new Set();
    this.started = false;
    this.live = true;
    this.failures = 0;
    this.follow = null;
    var mediaSource = new MediaSource();
    this.mediaSource = mediaSource;
    this.objectUrl = URL.createObjectURL(mediaSource);
    this.video.removeAttribute('src');
    this.video.src = this.objectUrl;
    mediaSource.addEventListener('sourceopen', function () {
      if (mediaSource !== self.mediaSource) { return; }
      try {
        self.buffer = mediaSource.addSourceBuffer('video/mp4; codecs="' + tl.codecs + '"');
      } catch (e) {
        self.fail('MSE refused the stream: ' + e.message);
        return;
      }
      self.buffer.addEventListener('error', function () { self.fail('MSE could not append a segment'); });
      self.initPending = true;
      self.pump();
    }, { once: true });
  };

  MsePlayer.prototype.detach = function () {
    this.busy = false;
    if (this.fetchControl) { this.fetchControl.abort(); }
    this.buffer = null;
    this.mediaSource = null;
    if (this.objectUrl) { URL.revokeObjectURL(this.objectUrl); this.objectUrl = null; }
  };

  MsePlayer.prototype.setTimeline = function (tl) {
    this.tl = tl;
    this.wanted = null;  // the feed sends nothing of the old rendition once it switched
    if (!tl.online) { this.onlineSince = null; return; }
    if (this.onlineSince === null) { this.onlineSince = performance.now(); }
    if (tl.generation !== this.generation || !this.mediaSource) {
      this.attach(tl);  // first start, or the stream restarted: its media time begins anew
    } else {
      if (this.quality !== null && tl.quality !== this.quality) {
        // Another rendition: its init segment first, then its segments from the next
        // sequence on. What is buffered stays, so the picture never stops at the switch.
        this.initPending = true;
      }
      this.pump();
    }
  };

  /** The renditions on offer, top first: [{name, bandwidth, resolution}]. */
  MsePlayer.prototype.qualities = function () {
    return (this.tl && this.tl.qualities) || [];
  };

  /** Ask for rendition `name`; `manual` (the viewer's choice) turns automatic choice off. */
  MsePlayer.prototype.choose = function (name, manual) {
    if (manual !== undefined) { this.auto = !manual; }
    try { sessionStorage.setItem(QUALITY_KEY, this.auto ? '' : name); } catch (e) { /* private mode */ }
    this.upStreak = 0;
    if (this.tl && name !== this.tl.quality) {
      this.wanted = name;
      // A segment of the old rendition still on the way is dropped: the new one's comes next.
      if (this.busy && !this.initPending && this.fetchControl) { this.fetchControl.abort(); }
    }
    if (this.onQuality) { this.onQuality(name); }
  };

  /** A segment still arriving after SLOW_FETCH_SHARE of its duration: step down now, not
   * after it has finally come, or the buffer runs dry while it trickles in. */
  MsePlayer.prototype.watchFetch = function (seg, control) {
    var self = this, list = this.qualities(), at = this.qualityIndex();
    if (!this.auto || at < 0 || at >= list.length - 1) { return; }
    setTimeout(function () {
      if (self.fetchControl !== control || control.arrived || self.wanted !== null) { return; }
      self.lastDownAt = performance.now();
      self.choose(list[at + 1].name);
    }, seg.duration * SLOW_FETCH_SHARE * 1000);
  };

  MsePlayer.prototype.qualityIndex = function () {
    var list = this.qualities();
    for (var i = 0; i < list.length; i++) { if (list[i].name === this.tl.quality) { return i; } }
    return -1;
  };

  /** After each segment: step down when it came too slowly, up when there is room to spare. */
  MsePlayer.prototype.adapt = function (seg, bytes, seconds) {
    var list = this.qualities();
    if (!this.auto || list.length < 2 || !seg) { return; }
    var at = this.qualityIndex();
    if (at < 0) { return; }
    this.throughput = bytes * 8 / Math.max(seconds, 0.001);
    if (seconds > seg.duration * SLOW_FETCH_SHARE && at < list.length - 1) {
      this.lastDownAt = performance.now();
      this.choose(list[at + 1].name);
      return;
    }
    var higher = at > 0 ? list[at - 1] : null;
    var needed = higher && higher.bandwidth ? higher.bandwidth * UP_HEADROOM : Infinity;
    this.upStreak = this.throughput > needed ? this.upStreak + 1 : 0;
    if (higher && this.upStreak >= UP_AFTER_SEGMENTS && performance.now() - this.lastDownAt > UP_HOLD_MS) {
      this.choose(higher.name);
    }
  };

  MsePlayer.prototype.edge = function () { return liveEdge(this.tl, this.clock); };

  /** Where every viewer should be right now: the same for all, a fixed delay behind the edge. */
  MsePlayer.prototype.target = function () {
    var tl = this.tl, edge = this.edge();
    if (edge === null) { return 0; }
    var last = tl.segments[tl.segments.length - 1], end = last.start + last.duration;
    if (tl.partial) { end = tl.partial.start + tl.partial.duration; }
    // Following fragments, what exists has grown since this timeline came: what we hold.
    var ranges = this.video.buffered;
    if (this.follow && ranges.length) { end = Math.max(end, ranges.end(ranges.length - 1)); }
    // Following parts, every fragment comes a round trip after it was asked for: two round
    // trips of room. Whole segments (no parts, following refused, or a round trip too long
    // to follow parts by request): a segment and a margin behind, as the timeline says.
    var trips = this.clock.synced ? 2 * this.clock.roundTrip : 0;
    var delay = this.mayFollow() ? tl.delay + trips
      : tl.part_target ? tl.target_duration + 0.75 + trips : tl.delay;
    var aim = edge - delay - this.extraDelay;
    // Never aim past what exists (an encoder slower than real time would pull us there).
    return clamp(aim, tl.segments[0].start, end - 0.25);
  };

  MsePlayer.prototype.position = function () {
    return this.started ? this.video.currentTime : this.target();
  };

  MsePlayer.prototype.nextSegment = function () {
    var segments = this.tl.segments, position = this.position();
    var horizon = position + (this.live ? 3600 : READ_AHEAD_SECONDS);
    for (var i = 0; i < segments.length; i++) {
      var seg = segments[i];
      if (seg.start + seg.duration <= position + 0.05) { continue; }
      if (seg.start > horizon) { break; }
      if (!this.appended.has(seg.sequence) && !this.missing.has(seg.sequence)) { return seg; }
    }
    return null;
  };

  MsePlayer.prototype.append = function (data) {
    var buffer = this.buffer;
    return new Promise(function (resolve, reject) {
      function done() { buffer.removeEventListener('error', failed); resolve(); }
      function failed() { buffer.removeEventListener('updateend', done); reject(new Error('append failed')); }
      buffer.addEventListener('updateend', done, { once: true });
      buffer.addEventListener('error', failed, { once: true });
      buffer.appendBuffer(data);
    });
  };

  MsePlayer.prototype.fetchBytes = function (uri, seconds) {
    var control = this.fetchControl = new AbortController();
    var limit = Math.max(FETCH_TIMEOUT_MS, (seconds || 0) * FETCH_TIMEOUT_DURATIONS * 1000);
    var timer = setTimeout(function () { control.timedOut = true; control.abort(); }, limit);
    return fetch(withToken(uri), { credentials: 'same-origin', signal: control.signal })
      .then(function (response) {
        if (response.status === 404) { var gone = new Error('gone'); gone.gone = true; throw gone; }
        if (!response.ok) { throw new Error(uri + ' answered ' + response.status); }
        return response.arrayBuffer();
      }).finally(function () { clearTimeout(timer); });
  };

  /** Fetch and append the next segment the position needs; one at a time, then again. */
  MsePlayer.prototype.pump = function () {
    var self = this, buffer = this.buffer, tl = this.tl;
    if (this.dead || this.busy || !buffer || !tl || buffer.updating || tl.generation !== this.generation) { return; }
    if (this.wanted !== null) { return; }  // the chosen rendition's timeline is on the way
    var seg = null, uri;
    if (this.initPending) {
      uri = tl.init;
    } else {
      seg = this.nextSegment();
      if (!seg) {
        var next = this.followFrom();
        if (next) { this.pumpFragment(next); }
        return;
      }
      uri = seg.uri;
    }
    this.busy = true;
    var fetchedFrom = performance.now(), quality = tl.quality, codecs = tl.codecs;
    var fetching = this.fetchBytes(uri, seg && seg.duration), control = this.fetchControl;
    if (seg) { this.watchFetch(seg, control); }
    fetching.then(function (data) {
      control.arrived = true;
      if (buffer !== self.buffer) { return; }
      var seconds = (performance.now() - fetchedFrom) / 1000;
      if (!seg && self.codecs && codecs !== self.codecs && buffer.changeType) {
        buffer.changeType('video/mp4; codecs="' + codecs + '"');  // e.g. High -> Main profile
      }
      return self.append(data).then(function () {
        if (seg) {
          self.appended.set(seg.sequence, seg);
          self.adapt(seg, data.byteLength, seconds);
        } else {
          self.initPending = false;
          self.quality = quality;
          self.codecs = codecs;
        }
        self.failures = 0;
      });
    }).catch(function (error) {
      if (buffer !== self.buffer || (error.name === 'AbortError' && !control.timedOut)) { return; }
      if (error.gone && seg) { self.missing.add(seg.sequence); return; }
      if (error.name === 'QuotaExceededError') { self.evict(5); return; }
      self.failures += 1;
      if (self.failures >= 5) { self.fail('segments keep failing: ' + error.message); }
      return sleep(500 * self.failures);
    }).then(function () {
      if (buffer !== self.buffer) { return; }
      self.busy = false;
      self.tick();
      self.pump();
    });
  };

  /** Where to go on following the live edge fragment by fragment, or null: only while live,
   * with a source writing parts, once every earlier segment the position needs is here. */
  /** Whether this viewer follows parts: the source writes them, the server lets it, and its
   * round trip is short enough. */
  MsePlayer.prototype.mayFollow = function () {
    return !!(this.tl && this.tl.part_target) && performance.now() >= this.followAfter &&
      this.clock.synced && this.clock.roundTrip <= FOLLOW_MAX_TRIP;
  };

  MsePlayer.prototype.followFrom = function () {
    if (!this.live) { this.stopFollowing(); return null; }
    if (this.follow) { return this.follow; }
    if (!this.mayFollow()) { return null; }
    var partial = this.tl.partial;
    if (!partial || this.appended.has(partial.sequence) || this.missing.has(partial.sequence)) { return null; }
    this.follow = { sequence: partial.sequence, index: 0 };  // its first fragment holds the keyframe
    return this.follow;
  };

  /** Back to whole segments (scrubbed back, paused, or the server no longer has it): the
   * segment followed halfway is fetched whole again when it is needed. */
  MsePlayer.prototype.stopFollowing = function () {
    if (!this.follow) { return; }
    if (this.follow.index > 0) { this.appended.delete(this.follow.sequence); }
    this.follow = null;
  };

  /** Ask for the next fragment; the server answers when it is written. */
  MsePlayer.prototype.pumpFragment = function (at) {
    var self = this, buffer = this.buffer, tl = this.tl;
    this.busy = true;
    var control = this.fetchControl = new AbortController();
    var limit = Math.max(FETCH_TIMEOUT_MS, (3 * tl.target_duration + 2) * 1000);
    var timer = setTimeout(function () { control.timedOut = true; control.abort(); }, limit);
    var uri = '/fragment?gen=' + this.generation + '&seq=' + at.sequence + '&k=' + at.index +
      (tl.quality ? '&quality=' + encodeURIComponent(tl.quality) : '');
    fetch(withToken(uri), { credentials: 'same-origin', cache: 'no-store', signal: control.signal })
      .then(function (response) {
        if (response.status === 204) { return null; }  // nothing new in time: ask again
        if (response.status === 429) {  // the server is full of waiting requests: segments
          var busy = new Error('busy'); busy.busy = true; throw busy;
        }
        if (response.status === 404) { var gone = new Error('gone'); gone.gone = true; throw gone; }
        if (!response.ok) { throw new Error('a fragment answered ' + response.status); }
        var which = /^(\d+)\.(\d+)-(\d+)$/.exec(response.headers.get('X-Fragments') || '');
        if (!which) { throw new Error('a fragment answer without X-Fragments'); }
        return response.arrayBuffer().then(function (data) {
          return { sequence: parseInt(which[1], 10), first: parseInt(which[2], 10),
                   last: parseInt(which[3], 10), data: data };
        });
      }).finally(function () { clearTimeout(timer); })
      .then(function (got) {
        if (buffer !== self.buffer || !got || self.follow !== at) { return; }
        return self.append(got.data).then(function () {
          if (!self.appended.has(got.sequence)) {
            // placed for eviction once the timeline lists it (see evict)
            self.appended.set(got.sequence, { sequence: got.sequence, start: Infinity, duration: 0 });
          }
          self.follow = { sequence: got.sequence, index: got.last + 1 };
          self.fragments += got.last - got.first + 1;
          self.ui.root.dataset.fragments = String(self.fragments);
          self.failures = 0;
        });
      }).catch(function (error) {
        if (buffer !== self.buffer || (error.name === 'AbortError' && !control.timedOut)) { return; }
        self.stopFollowing();
        if (error.gone) { return; }
        if (error.busy) { self.followAfter = performance.now() + FOLLOW_PAUSE_MS; return; }
        if (error.name === 'QuotaExceededError') { self.evict(5); return; }
        self.failures += 1;
        if (self.failures >= 5) { self.fail('fragments keep failing: ' + error.message); }
        return sleep(500 * self.failures);
      }).then(function () {
        if (buffer !== self.buffer) { return; }
        self.busy = false;
        self.tick();
        self.pump();
      });
  };

  MsePlayer.prototype.buffered = function (time) {
    var ranges = this.video.buffered;
    for (var i = 0; i < ranges.length; i++) {
      if (time >= ranges.start(i) && time < ranges.end(i)) { return true; }
    }
    return false;
  };

  /** Seek, nudged into a buffered range when the target falls a hair before one begins. */
  MsePlayer.prototype.seek = function (time) {
    var ranges = this.video.buffered;
    for (var i = 0; i < ranges.length; i++) {
      if (time < ranges.start(i) && ranges.start(i) - time < 0.3) { time = ranges.start(i) + 0.01; break; }
    }
    this.ownSeek = true;
    this.lastSeekAt = performance.now();
    this.video.currentTime = time;
  };

  /** Drop media played long ago so a long session does not hold the whole stream. */
  MsePlayer.prototype.evict = function (keepSeconds) {
    var buffer = this.buffer, ranges = this.video.buffered;
    if (!buffer || buffer.updating || !ranges.length) { return; }
    var until = this.video.currentTime - (keepSeconds || BACK_BUFFER_SECONDS);
    if (ranges.start(0) >= until - 1) { return; }
    try {
      buffer.remove(0, until);
    } catch (e) { return; }
    var self = this, oldest = this.tl.segments.length ? this.tl.segments[0].sequence : -1;
    this.appended.forEach(function (seg, sequence) {
      if (seg.start + seg.duration <= until + 0.05 || sequence < oldest) { self.appended.delete(sequence); }
    });
  };

  MsePlayer.prototype.goLive = function () {
    if (!this.tl || !this.started) { return; }
    this.live = true;
    this.seek(this.target());
    this.video.play().catch(function () { /* the viewer presses play */ });
  };

  MsePlayer.prototype.scrubTo = function (time) {
    if (!this.started) { return; }
    var tl = this.tl, first = tl.segments[0];
    this.live = false;
    this.video.playbackRate = 1;
    this.seek(Math.max(first.start + 0.05, time));
    this.pump();
  };

  /** Stuck where nothing is buffered, with media a little further on (a switch of rendition,
   * a segment the server no longer had): move to where the media is, as long as that is not
   * past the shared target. A seek into the hole would otherwise wait for ever. */
  MsePlayer.prototype.jumpGap = function (target) {
    var video = this.video, now = video.currentTime, ranges = video.buffered;
    if (video.paused || video.readyState >= 3 || this.buffered(now)) { return false; }
    for (var i = 0; i < ranges.length; i++) {
      var start = ranges.start(i);
      if (start > now && start - now < GAP_LIMIT_SECONDS && start <= target + JUMP_SECONDS) {
        this.seek(start + 0.01);
        return true;
      }
    }
    return false;
  };

  /** Four times a second: start, steer towards the shared target, keep the buffer small. */
  MsePlayer.prototype.tick = function () {
    var tl = this.tl, video = this.video;
    if (this.dead || !tl || !tl.online || tl.generation !== this.generation || !tl.segments.length) {
      this.ui.show(this);
      return;
    }
    var target = this.target();
    if (!this.started) {
      if (!this.clock.tried) {
        // wait: the target is only known once the clock is
      } else if (!this.initPending && (this.buffered(target + 0.01) || this.buffered(target + 0.3))) {
        this.started = true;
        this.seek(target);
        video.play().catch(function () { /* autoplay blocked: the viewer presses play */ });
      } else if (this.onlineSince !== null && performance.now() - this.onlineSince > START_TIMEOUT_MS) {
        this.fail('nothing played within ' + START_TIMEOUT_MS / 1000 + ' s');
        return;
      }
    } else if (this.live && this.jumpGap(target)) {
      // moved past a hole; steering resumes on the next tick
    } else if (this.live && !video.paused && !video.seeking) {
      var error = video.currentTime - target;
      if (Math.abs(error) > JUMP_SECONDS) {
        video.playbackRate = 1;
        this.seek(target);
      } else if (Math.abs(error) < DEADBAND_SECONDS) {
        video.playbackRate = 1;
      } else {
        video.playbackRate = 1 - clamp(error * RATE_GAIN, -RATE_LIMIT, RATE_LIMIT);
      }
    } else if (!this.live) {
      video.playbackRate = 1;
      var oldest = tl.segments[0].start;
      if (!video.seeking && video.currentTime < oldest && !this.buffered(video.currentTime)) {
        this.seek(oldest + 0.05);  // what we were watching has left the window
      }
    }
    this.evict();
    this.ui.show(this);
  };

  /* ----------------------------------------------------------------- the plain player */

  /** The page's own <video src="/stream.mp4">; only needs reconnecting after a restart. */
  function PlainPlayer(video, clock, ui) {
    var self = this;
    this.video = video;
    this.clock = clock;
    this.ui = ui;
    this.generation = null;
    this.tl = null;
    // /stream.mp4 keeps the segments' own media times, so the same timeline measures its delay.
    this.timer = setInterval(function () { ui.showPlain(self); }, 500);
  }

  PlainPlayer.prototype.edge = function () { return liveEdge(this.tl, this.clock); };

  PlainPlayer.prototype.setTimeline = function (tl) {
    this.tl = tl;
    var video = this.video, fresh = this.generation !== null && tl.generation !== this.generation;
    var idle = video.ended || video.error || video.networkState === HTMLMediaElement.NETWORK_NO_SOURCE;
    if (tl.online && (fresh || idle || !video.getAttribute('src'))) {
      var quality = new URLSearchParams(location.search).get('quality');
      video.src = withToken('/stream.mp4' + (quality ? '?quality=' + encodeURIComponent(quality) : ''));
      video.play().catch(function () { /* the viewer presses play */ });
    }
    if (tl.online) {
      this.generation = tl.generation;
      this.ui.root.dataset.generation = String(tl.generation);
    }
  };

  PlainPlayer.prototype.destroy = function () { clearInterval(this.timer); };

  /* ----------------------------------------------------------------------- the page */

  function Ui(root, choice) {
    var self = this;
    this.root = root;
    this.goLiveButton = el('button', { type: 'button', 'class': 'go-live', text: 'Go live' });
    this.behind = el('span', { 'class': 'behind', 'aria-live': 'off' });
    this.scrub = el('input', { type: 'range', 'class': 'scrub', min: '0', max: '0', step: '0.1',
                                value: '0', 'aria-label': 'Position in the stream' });
    this.modeText = el('span', { 'class': 'mode-text' });
    this.switchLink = el('a', { 'class': 'switch-player', 'data-player-switch': '' });
    this.note = el('p', { 'class': 'player-note', hidden: '' });
    this.qualitySelect = el('select', { 'class': 'quality', 'aria-label': 'Quality', hidden: '' });
    this.qualitySelect.addEventListener('change', function () {
      if (self.onQuality) { self.onQuality(self.qualitySelect.value); }
    });
    root.appendChild(el('div', { 'class': 'controls-row' },
      [this.goLiveButton, this.scrub, this.behind, this.qualitySelect]));
    root.appendChild(el('div', { 'class': 'controls-row small' }, [this.modeText, this.switchLink]));
    root.appendChild(this.note);
    this.dragging = false;
    this.scrub.addEventListener('input', function () { self.dragging = true; });
    this.scrub.addEventListener('change', function () {
      self.dragging = false;
      if (self.onScrub) { self.onScrub(parseFloat(self.scrub.value)); }
    });
    this.goLiveButton.addEventListener('click', function () { if (self.onGoLive) { self.onGoLive(); } });
    root.hidden = false;
    this.choice = choice;
  }

  Ui.prototype.setMode = function (mode, reason) {
    this.root.dataset.mode = mode;
    var other = mode === 'mse' ? 'plain' : 'mse';
    this.modeText.textContent = mode === 'mse' ? 'Low-latency player' : 'Plain player';
    this.switchLink.textContent = mode === 'mse' ? 'use the plain player' : 'try the low-latency player';
    this.switchLink.href = urlWithChoice(location.href, other).href;
    this.goLiveButton.hidden = this.scrub.hidden = mode !== 'mse';
    // The MSE player's menu is the one quality control: next to it, the page's plain links
    // (for no-JS viewers) would lose to the menu's remembered choice ("source" reloading low).
    var links = document.getElementById('qualities');
    if (links) { links.hidden = mode === 'mse'; }
    if (reason) {
      this.root.dataset.fallback = reason;
      this.message('Playing the plain stream: ' + reason + '.');
    }
  };

  Ui.prototype.message = function (text) {
    this.note.textContent = text || '';
    this.note.hidden = !text;
  };

  /** Reflect the MSE player's state; data-attributes let tests and styles read it too. */
  Ui.prototype.show = function (player) {
    var tl = player.tl, video = player.video, root = this.root;
    root.classList.toggle('is-offline', !tl || !tl.online);
    if (!tl || !tl.online) {
      root.dataset.state = tl ? tl.status : 'starting';
      this.message(tl && tl.status === 'ended' ? 'The stream has ended.'
        : tl ? 'The stream is offline. This player reconnects by itself when it is back.' : '');
      return;
    }
    this.message('');
    this.showQualities(player);
    var edge = player.edge();
    if (!player.started || edge === null) { root.dataset.state = 'starting'; this.behind.textContent = 'Starting…'; return; }
    var behind = Math.max(0, edge - video.currentTime);
    root.dataset.state = player.live ? 'live' : 'dvr';
    root.dataset.behind = behind.toFixed(2);
    root.dataset.extraDelay = player.extraDelay.toFixed(1);  // added after stalls
    this.behind.textContent = (player.live ? '' : 'Replay · ') + behind.toFixed(1) + ' s behind live';
    this.goLiveButton.classList.toggle('is-live', player.live);
    this.goLiveButton.textContent = player.live ? 'Live' : 'Go live';
    if (!this.dragging) {
      this.scrub.min = tl.segments[0].start.toFixed(1);
      this.scrub.max = edge.toFixed(1);
      this.scrub.value = video.currentTime.toFixed(1);
    }
  };

  /** The rendition menu: "Auto" plus every quality; data-quality says which one plays. */
  Ui.prototype.showQualities = function (player) {
    var list = player.qualities(), select = this.qualitySelect, root = this.root;
    select.hidden = list.length < 2;
    if (select.hidden) { return; }
    var names = ['auto'].concat(list.map(function (q) { return q.name; }));
    if (select.dataset.names !== names.join(' ')) {
      select.textContent = '';
      select.appendChild(el('option', { value: '', text: 'Auto' }));
      list.forEach(function (q) {
        var label = q.name + (q.resolution ? ' ' + q.resolution.split('x')[1] + 'p' : '');
        select.appendChild(el('option', { value: q.name, text: label }));
      });
      select.dataset.names = names.join(' ');
    }
    if (document.activeElement !== select) { select.value = player.auto ? '' : player.tl.quality; }
    root.dataset.quality = player.quality || '';
    root.dataset.auto = player.auto ? '1' : '0';
    if (player.throughput) { root.dataset.throughput = String(Math.round(player.throughput)); }
  };

  Ui.prototype.showPlain = function (player) {
    var tl = player.tl, video = player.video, edge = player.edge();
    this.root.dataset.state = tl ? (tl.online ? 'live' : tl.status) : 'starting';
    // Firefox counts a progressive MP4's currentTime from the response's first picture, not
    // from its media time: a position before every listed segment says nothing of the delay.
    this.behind.hidden = !(tl && tl.online && edge !== null && video.currentTime > 0 &&
                           tl.segments.length && video.currentTime >= tl.segments[0].start);
    if (!this.behind.hidden) {
      var behind = Math.max(0, edge - video.currentTime);
      this.root.dataset.behind = behind.toFixed(2);
      this.behind.textContent = behind.toFixed(1) + ' s behind live';
    } else {
      delete this.root.dataset.behind;
    }
  };

  /** Title, live light, uptime and viewer count from the push channel, without reloads. */
  function LiveInfo(clock) {
    var frame = document.querySelector('iframe.info');
    this.clock = clock;
    this.light = el('span', { 'class': 'light' });
    this.status = el('span', { 'class': 'status' });
    this.title = el('h1', { 'class': 'title' });
    this.uptime = el('span', { 'class': 'uptime', hidden: '' });
    this.viewers = el('span', { 'class': 'viewers', hidden: '' });
    this.notice = el('p', { 'class': 'notice party', hidden: '' });  // the watch party's state
    this.bar = el('div', { 'class': 'info-bar live-info' },
      [this.light, this.status, this.title, this.viewers, this.uptime, this.notice]);
    this.startedAt = null;
    this.paused = false;
    this.startsAt = null;
    this.listeners = [];
    if (frame) {
      // The frame refreshes itself for no-JS viewers; this bar replaces it live.
      frame.parentNode.insertBefore(this.bar, frame);
      frame.parentNode.removeChild(frame);
    } else {
      ROOT.parentNode.insertBefore(this.bar, ROOT.nextSibling);
    }
  }

  LiveInfo.prototype.setStatus = function (data) {
    this.light.className = 'light ' + data.status;
    this.light.title = data.status;
    this.status.textContent = (data.paused ? 'paused' : String(data.status)).toUpperCase();
    if (typeof data.title === 'string') {
      this.title.textContent = data.title;
      document.title = data.title;
    }
    this.startedAt = data.online ? data.started_at : null;
    this.paused = !!data.paused;
    this.startsAt = typeof data.starts_at === 'number' ? data.starts_at : null;
    this.tick();
    this.listeners.forEach(function (listener) { listener(data); });
  };

  LiveInfo.prototype.setViewers = function (count) {
    this.viewers.textContent = count + (count === 1 ? ' viewer' : ' viewers');
    this.viewers.hidden = false;
    ROOT.dataset.viewers = String(count);
  };

  LiveInfo.prototype.tick = function () {
    if (this.startedAt) {
      this.uptime.textContent = 'Uptime ' + formatClock(this.clock.now() - this.startedAt);
      this.uptime.hidden = false;
    } else {
      this.uptime.hidden = true;
    }
    var left = this.startsAt === null ? 0 : Math.ceil(this.startsAt - this.clock.now());
    if (this.paused) {
      this.notice.textContent = 'Paused by the host: the video goes on by itself when the host resumes.';
    } else if (left > 0) {
      this.notice.textContent = 'Starts in ' + formatClock(left) + ' for everyone.';
    }
    this.notice.hidden = !(this.paused || left > 0);
  };

  LiveInfo.prototype.connect = function () {
    var self = this;
    function refresh() { getJson('/api/status').then(function (data) { self.setStatus(data); }).catch(function () {}); }
    refresh();
    setInterval(function () { self.tick(); }, 1000);
    if (!window.EventSource) { setInterval(refresh, 10000); return; }
    var source = new EventSource(withToken('/events'));
    source.addEventListener('status', function (event) { self.setStatus(JSON.parse(event.data)); });
    source.addEventListener('viewers', function (event) {
      var data = JSON.parse(event.data);
      if (typeof data.count === 'number') { self.setViewers(data.count); }
    });
    source.addEventListener('resync', refresh);
    source.addEventListener('open', refresh);  // after a reconnect: catch up on what was missed
  };

  /** The <video> to play into; created when the page was loaded while the stream was offline. */
  function videoElement() {
    var video = document.querySelector('video.player');
    if (video) { return video; }
    video = el('video', { 'class': 'player', controls: '', autoplay: '', playsinline: '', preload: 'none' });
    var card = document.querySelector('.offline-card');
    if (card) { card.parentNode.replaceChild(video, card); } else { ROOT.parentNode.insertBefore(video, ROOT); }
    return video;
  }

  /** A quality the viewer picked earlier in this tab (or ?quality= in the address). */
  function rememberedQuality() {
    var asked = new URLSearchParams(location.search).get('quality');
    if (asked) { return asked; }
    try { return sessionStorage.getItem(QUALITY_KEY) || ''; } catch (e) { return ''; }
  }

  /** A quality picked in the menu goes into the address and the links that keep one (reload,
   * VLC/mpv), so a reload or a copied link plays what the viewer chose, not an older choice. */
  function showQualityInLinks(name) {
    function rewrite(href) {
      var url = new URL(href, location.href);
      if (name) { url.searchParams.set('quality', name); } else { url.searchParams.delete('quality'); }
      return url.href;
    }
    try { history.replaceState(history.state, '', rewrite(location.href)); } catch (e) { /* sandboxed */ }
    document.querySelectorAll('a[data-keeps-quality]').forEach(function (link) {
      link.href = rewrite(link.href);
    });
  }

  function main() {
    var startQuality = rememberedQuality();
    var choice = playerChoice();
    keepChoice(choice);
    var clock = new ServerClock();
    var ui = new Ui(ROOT, choice);
    var info = new LiveInfo(clock);
    var player = null, video = null, fallbackReason = null;

    function usePlain(reason) {
      fallbackReason = reason;
      if (player) { player.destroy(); }
      if (video) { video.playbackRate = 1; video.removeAttribute('src'); }
      player = new PlainPlayer(video || videoElement(), clock, ui);
      ui.setMode('plain', reason);
      if (feed.current) { player.setTimeline(feed.current); }
    }

    function wantMse() {
      if (choice === 'plain' || fallbackReason) { return false; }
      if (!window.MediaSource) { usePlain('this browser has no Media Source Extensions'); return false; }
      return true;
    }

    var feed = new TimelineFeed(function (tl) {
      if (tl.online && !video) { video = videoElement(); }
      if (!video) { ui.show({ tl: tl }); return; }  // offline since the page loaded
      if (!player) {
        if (wantMse()) {
          player = new MsePlayer(video, clock, ui, usePlain);
          player.onQuality = function (name) { feed.switchTo(name); };
          ui.onQuality = function (name) {
            if (name) { player.choose(name, true); } else { player.auto = true; player.choose(feed.quality, false); }
            showQualityInLinks(name);
          };
          if (startQuality) { player.auto = false; }
          ui.setMode('mse');
          ui.onGoLive = function () { if (player.goLive) { player.goLive(); } };
          ui.onScrub = function (time) { if (player.scrubTo) { player.scrubTo(time); } };
        } else if (!player) {
          player = new PlainPlayer(video, clock, ui);
          if (!fallbackReason) { ui.setMode('plain'); }
        }
      }
      player.setTimeline(tl);
    });

    info.listeners.push(function (status) {
      var tl = feed.current;
      if (tl && (status.generation !== tl.generation || status.online !== tl.online)) { feed.poke(); }
    });

    ui.setMode(choice === 'plain' ? 'plain' : 'mse');
    if (choice === 'plain') { video = document.querySelector('video.player'); }
    else {
      // Stop the page's /stream.mp4 before it buffers: the MSE player takes over.
      video = document.querySelector('video.player');
      if (video && window.MediaSource) { video.removeAttribute('src'); video.load(); }
    }
    info.connect();
    feed.quality = startQuality;
    // The first segments load while the clock syncs (five round trips on a slow circuit);
    // playback starts once the clock says where everyone else is.
    feed.start();
    clock.sync().then(function () {
      setInterval(function () { clock.sync(); }, CLOCK_RESYNC_MS);
    });
  }

  main();
})();
