/*
 * The shared timeline (/api/playlist) by long polling, and where its live edge is now.
 */
import { getJson, sleep, withToken } from './util.js';

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

export { TimelineFeed, liveEdge };
