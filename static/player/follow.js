/*
 * Following the live edge fragment by fragment: while the source writes parts, the MSE player
 * asks /fragments once, from the segment in progress on, and the server pushes every fragment
 * in that one response the moment it exists. A request per part (tried first) could not keep
 * up over a Tor circuit (0.5-1 s round trips against 200 ms parts) and cost the server eight
 * times as much (docs/benchmarks.md, "Pushed fragments").
 */
import { FETCH_TIMEOUT_MS, withToken } from './util.js';

var FOLLOW_PAUSE_MS = 30000;   // refused (429: too many video connections): segments this long
var FRAME_HEADER = 16;         // /fragments: length, segment, first, last (32-bit, big-endian)

/** `a` and then `b`, in one array. */
function joined(a, b) {
  var out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Adds fragment following to the MSE player's prototype. */
function addFollowing(MsePlayer) {
  /** Whether this viewer follows parts: the source writes them and the server lets it. */
  MsePlayer.prototype.mayFollow = function () {
    return !!(this.tl && this.tl.part_target) && performance.now() >= this.followAfter &&
      this.clock.synced;
  };

  /** Where to go on following the live edge fragment by fragment, or null: only while live,
   * with a source writing parts, once every earlier segment the position needs is here. */
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
    if (this.pushing) { this.fetchControl.abort(); }  // its end goes through fetched()
  };

  /** Fragments appended: the player holds them, and asks from the next one on. */
  MsePlayer.prototype.followed = function (sequence, first, last) {
    if (!this.appended.has(sequence)) {
      // placed for eviction once the timeline lists it (see evict)
      this.appended.set(sequence, { sequence: sequence, start: Infinity, duration: 0 });
    }
    this.follow = { sequence: sequence, index: last + 1 };
    this.fragments += last - first + 1;
    this.ui.root.dataset.fragments = String(this.fragments);
    this.failures = 0;
    this.watchLag();
    this.probeUp();
    return this.follow;
  };

  /** Read /fragments from `at` on: every fragment the moment it is written, appended in
   * turn, until the server ends it (gone: back to the timeline), this player stops following,
   * or nothing comes for three segments. */
  MsePlayer.prototype.pumpPushed = function (at) {
    var self = this, buffer = this.buffer, tl = this.tl;
    this.busy = this.pushing = true;
    var control = this.fetchControl = new AbortController();
    var limit = Math.max(FETCH_TIMEOUT_MS, (3 * tl.target_duration + 2) * 1000);
    var timer = null;
    function quietFor() {
      clearTimeout(timer);
      timer = setTimeout(function () { control.timedOut = true; control.abort(); }, limit);
    }
    quietFor();
    var pending = new Uint8Array(0);
    /** Append every whole frame received so far, one after another. */
    function appendFrames() {
      var chain = Promise.resolve();
      while (pending.length >= FRAME_HEADER) {
        var header = new DataView(pending.buffer, pending.byteOffset, FRAME_HEADER);
        var length = header.getUint32(0);
        if (pending.length < FRAME_HEADER + length) { break; }
        var frame = { sequence: header.getUint32(4), first: header.getUint32(8),
                      last: header.getUint32(12),
                      data: pending.slice(FRAME_HEADER, FRAME_HEADER + length) };
        pending = pending.slice(FRAME_HEADER + length);
        chain = chain.then(appendOne.bind(null, frame));
      }
      return chain;
    }
    function appendOne(frame) {
      if (buffer !== self.buffer || self.follow !== at) { return; }
      return self.append(frame.data).then(function () {
        if (self.follow === at) { at = self.followed(frame.sequence, frame.first, frame.last); }
      });
    }
    var uri = '/fragments?gen=' + this.generation + '&seq=' + at.sequence + '&k=' + at.index +
      (tl.quality ? '&quality=' + encodeURIComponent(tl.quality) : '');
    fetch(withToken(uri), { credentials: 'same-origin', cache: 'no-store', signal: control.signal })
      .then(function (response) {
        if (response.status === 429) { var busy = new Error('busy'); busy.busy = true; throw busy; }
        if (response.status === 404) { var gone = new Error('gone'); gone.gone = true; throw gone; }
        if (!response.ok || !response.body) { throw new Error('fragments answered ' + response.status); }
        var reader = response.body.getReader();
        function step(chunk) {
          if (chunk.done) { return null; }  // the server ended it: ask the timeline again
          quietFor();
          pending = joined(pending, chunk.value);
          return appendFrames().then(function () {
            if (buffer !== self.buffer || self.follow !== at) { control.abort(); return null; }
            return reader.read().then(step);
          });
        }
        return reader.read().then(step);
      }).finally(function () { clearTimeout(timer); self.pushing = false; })
      .catch(function (error) {
        if (buffer !== self.buffer || (error.name === 'AbortError' && !control.timedOut)) { return; }
        self.stopFollowing();
        if (error.gone) { return; }
        if (error.busy) { self.followAfter = performance.now() + FOLLOW_PAUSE_MS; return; }
        return self.failed(error, 'fragments');
      }).then(function () { self.fetched(buffer); });
  };
}

export { addFollowing };
