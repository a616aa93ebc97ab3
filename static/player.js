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
 * ~200 ms), the player follows the segment in progress fragment by fragment (/fragments: the
 * server pushes each fragment in one response the moment it exists), so it plays under a second
 * behind the encoder instead of a segment and more. Without MSE, or when it fails, the page's own
 * /stream.mp4 keeps playing. ?player=plain or ?player=mse picks one explicitly; the choice is
 * carried in same-origin links and forms, never in a cookie.
 *
 * Title, live light, uptime and viewer count follow the /events push channel.
 * No inline script anywhere: the page passes data in data-attributes.
 *
 * This module starts it all; the parts, by concern, are in static/player/ (ES modules, loaded
 * by the browser: nothing to build).
 */
import { keepChoice, playerChoice } from './player/choice.js';
import { ServerClock } from './player/clock.js';
import { LiveInfo } from './player/live_info.js';
import { MsePlayer } from './player/mse.js';
import { PlainPlayer } from './player/plain.js';
import { TimelineFeed } from './player/timeline.js';
import { Ui } from './player/ui.js';
import { QUALITY_KEY, ROOT, el } from './player/util.js';

var CLOCK_RESYNC_MS = 60000;

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

if (ROOT) { main(); }
