// A 4 Hz display for the tests' headless Chromium: tests/test_ui_browser.py's `context` fixture adds this
// to every page before Prefect's UI loads. Without a GPU, Chromium renders WebGL in software (SwiftShader);
// the flow run graph (pixi.js) draws a frame on every animation frame, 60 a second, even when nothing moves:
// one open run page took 27.6 s of CPU in 15 s on this 2-core machine, 2.6 s with this clock (measured).
// Every callback still runs, all of one period's callbacks in one real animation frame, as a slow screen does.
// window.__frameClock.setPeriod(0) gives the page real frames again (the screenshots for docs/ use it).
(() => {
  const realFrame = window.requestAnimationFrame.bind(window);
  let periodMs = 250;
  let queue = new Map();
  let lastHandle = 0;
  let timer = null;
  const runBatch = (time) => {
    const batch = queue;
    queue = new Map();
    for (const callback of batch.values()) {
      try {
        callback(time);
      } catch (error) {
        setTimeout(() => { throw error; });  // reported as the browser reports a failing frame callback
      }
    }
  };
  window.requestAnimationFrame = (callback) => {
    lastHandle += 1;
    queue.set(lastHandle, callback);
    if (timer === null) {
      timer = setTimeout(() => { timer = null; realFrame(runBatch); }, periodMs);
    }
    return lastHandle;
  };
  window.cancelAnimationFrame = (handle) => { queue.delete(handle); };
  window.__frameClock = { setPeriod: (ms) => { periodMs = ms; } };
})();
