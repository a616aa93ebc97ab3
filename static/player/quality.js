/*
 * Which rendition the MSE player plays: the viewer's choice, or chosen automatically from the
 * throughput each segment arrived at (down at once when a segment is slow, or pushed fragments
 * fall behind; up only with room to spare and not soon after a step down; while following
 * pushed fragments, up when a timed part of the next rendition shows the room).
 */
import { QUALITY_KEY, getJson, withToken } from './util.js';

// Renditions: a segment that takes more than this share of its own duration to arrive means
// the connection cannot carry this quality; step down at once (before the buffer runs dry).
var SLOW_FETCH_SHARE = 0.7;
var UP_HEADROOM = 2.0;         // step up when measured throughput is this many times the next rate
var UP_AFTER_SEGMENTS = 3;     // ... for this many segments in a row
var UP_HOLD_MS = 15000;        // and never sooner than this after stepping down
var PROBE_WAIT_MAX_MS = 240000;  // following: the longest wait between two timed parts
var PROBE_SLACK_MS = 150;      // a timed part's body may lag the pace it needs this much

/** Read a body to its end, timed from its first bytes: bits per second, or an abort (through
 * `control`) as soon as it lags `needed` bits per second by PROBE_SLACK_MS, or stalls. */
function timedBody(reader, needed, control) {
  var started = performance.now(), received = 0, timer = null;
  function behind(bytes) { return bytes * 8 / needed * 1000 + PROBE_SLACK_MS; }
  function step(chunk) {
    clearTimeout(timer);
    var elapsed = performance.now() - started;
    if (chunk.done) { return received * 8 / Math.max(elapsed / 1000, 0.001); }
    received += chunk.value.length;
    if (elapsed > behind(received)) { control.abort(); throw new Error('no room'); }
    timer = setTimeout(function () { control.abort(); }, behind(received) - elapsed);
    return reader.read().then(step);
  }
  return reader.read().then(step);
}

/** Adds the rendition choice to the MSE player's prototype. */
function addQualityChoice(MsePlayer) {
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

  /** Following pushed fragments there is no fetch to time: a rendition the connection cannot
   * carry shows as fragments arriving ever further behind what the timeline says is written
   * (not the clock's live edge, which a party's pause moves away from the media). Over a
   * segment behind: step down. */
  MsePlayer.prototype.watchLag = function () {
    var list = this.qualities(), at = this.qualityIndex(), tl = this.tl;
    var ranges = this.video.buffered;
    if (!this.auto || at < 0 || at >= list.length - 1 || !tl.segments.length || !ranges.length ||
        this.wanted !== null) { return; }
    var last = tl.segments[tl.segments.length - 1];
    var written = tl.partial ? tl.partial.start + tl.partial.duration : last.start + last.duration;
    if (written - ranges.end(ranges.length - 1) > tl.target_duration) {
      this.lastDownAt = performance.now();
      this.choose(list[at + 1].name);
    }
  };

  /** Following pushed fragments there is no segment fetch to time, and this rendition's
   * fragments, written at its own pace, are too small to show what the link could carry (a
   * token bucket lets them through at once: timed on a 1 Mbit/s link they read 12 Mbit/s).
   * So now and then, not sooner than UP_HOLD_MS after a step down, fetch a part of the next
   * rendition up (the second of its newest segment: no keyframe, a fifth of a segment) and
   * time its body: with UP_HEADROOM to spare, step up; else the next try waits twice as long.
   * A whole segment was tried first: on 1 Mbit/s it queued a second of video ahead of the
   * pushed fragments and the picture stalled for that long. */
  MsePlayer.prototype.probeUp = function () {
    var self = this, list = this.qualities(), at = this.qualityIndex(), now = performance.now();
    if (!this.auto || this.probing || at <= 0 || this.wanted !== null || !list[at - 1].bandwidth ||
        now - this.lastDownAt < UP_HOLD_MS || now < this.probeAfter) { return; }
    var higher = list[at - 1], needed = higher.bandwidth * UP_HEADROOM;
    var control = new AbortController();
    this.probing = true;
    getJson(withToken('/api/playlist?quality=' + encodeURIComponent(higher.name)), control.signal)
      .then(function (tl) {
        var seg = tl.quality === higher.name && tl.segments[tl.segments.length - 1];
        if (!seg) { throw new Error('no segment of ' + higher.name + ' to time'); }
        // the folder's names (app/stream/folder.py): part K of stream12.m4s is stream12.K.m4s
        var part = seg.uri.replace(/\.m4s$/, '.1.m4s');
        return fetch(withToken(part), { credentials: 'same-origin', cache: 'no-store',
                                        signal: control.signal })
          .then(function (response) {
            if (!response.ok || !response.body) { throw new Error(part + ' answered ' + response.status); }
            return timedBody(response.body.getReader(), needed, control);
          }).then(function (bitsPerSecond) {
            self.throughput = bitsPerSecond;
            return bitsPerSecond > needed;
          });
      })
      .catch(function () { return false; })
      .then(function (room) {
        self.probing = false;
        self.probeWait = room ? UP_HOLD_MS
          : Math.min(PROBE_WAIT_MAX_MS, Math.max(UP_HOLD_MS, self.probeWait * 2));
        self.probeAfter = performance.now() + self.probeWait;
        if (room && self.auto && self.wanted === null && self.qualityIndex() === at) {
          self.choose(higher.name);
        }
      });
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
}

export { addQualityChoice };
