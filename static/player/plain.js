/*
 * The plain player: the page's own <video src="/stream.mp4">, reconnected after a restart,
 * its delay behind live shown from the same timeline.
 */
import { liveEdge } from './timeline.js';
import { withToken } from './util.js';

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

export { PlainPlayer };
