/*
 * Following the live edge fragment by fragment: while the source writes parts and the round
 * trip is short, the MSE player asks /fragment for the segment in progress, and the server
 * answers each request the moment the fragment exists.
 */
import { FETCH_TIMEOUT_MS, withToken } from './util.js';

var FOLLOW_PAUSE_MS = 30000;   // /fragment refused (429): follow whole segments this long
// A request per part keeps up only while the round trip is short against a part: over Tor
// (0.5-1 s) it stalled; such a viewer follows whole segments.
var FOLLOW_MAX_TRIP = 0.15;

/** Adds fragment following to the MSE player's prototype. */
function addFollowing(MsePlayer) {
  /** Whether this viewer follows parts: the source writes them, the server lets it, and its
   * round trip is short enough. */
  MsePlayer.prototype.mayFollow = function () {
    return !!(this.tl && this.tl.part_target) && performance.now() >= this.followAfter &&
      this.clock.synced && this.clock.roundTrip <= FOLLOW_MAX_TRIP;
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
        return self.failed(error, 'fragments');
      }).then(function () { self.fetched(buffer); });
  };
}

export { addFollowing };
