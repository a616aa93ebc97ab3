/*
 * The server's clock, measured against /api/clock (a scale private to the server process),
 * so that every viewer aims at the same moment of the stream.
 */
import { getJson, wallSeconds } from './util.js';

var CLOCK_SAMPLES = 5;

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

export { ServerClock };
