/*
 * Which rendition the MSE player plays: the viewer's choice, or chosen automatically from the
 * throughput each segment arrived at (down at once when a segment is slow, or pushed fragments
 * fall behind; up only with room to spare and not soon after a step down).
 */
import { QUALITY_KEY } from './util.js';

// Renditions: a segment that takes more than this share of its own duration to arrive means
// the connection cannot carry this quality; step down at once (before the buffer runs dry).
var SLOW_FETCH_SHARE = 0.7;
var UP_HEADROOM = 2.0;         // step up when measured throughput is this many times the next rate
var UP_AFTER_SEGMENTS = 3;     // ... for this many segments in a row
var UP_HOLD_MS = 15000;        // and never sooner than this after stepping down

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
