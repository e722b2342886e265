//! The panic boundary. Every exported function runs its body under `catch_unwind`; a panic
//! never unwinds into JavaScript. A panic while a connection was being worked on closes that
//! connection (INTERNAL_ERROR, reason "engine panic: ..."); the engine and the process go on.
//! The panic message goes to the engine's last error, not to stderr.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use crate::abi::{CLOSE_APP, CLOSE_IDLE, CLOSE_REMOTE, CLOSE_RESET, CLOSE_VERSION, EV_CLOSED};
use crate::engine::Engine;

/// QUIC INTERNAL_ERROR, the close code of a connection a panic ended.
pub const INTERNAL_ERROR: u64 = 0x1;

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}
static HOOK: Once = Once::new();

/// Route panic messages into a thread-local instead of stderr (once per process).
pub fn install_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".to_string()
            };
            let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg}{loc}"));
        }));
    });
}

pub fn take_message() -> String {
    LAST_PANIC.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

pub fn close_flags(remote: bool, app: bool, idle: bool, reset: bool) -> f64 {
    let mut f = 0;
    if remote {
        f |= CLOSE_REMOTE;
    }
    if app {
        f |= CLOSE_APP;
    }
    if idle {
        f |= CLOSE_IDLE;
    }
    if reset {
        f |= CLOSE_RESET;
    }
    f as f64
}

/// `close_flags` of a client whose server offered no common QUIC version.
pub fn version_close_flags() -> f64 {
    (CLOSE_REMOTE | CLOSE_VERSION) as f64
}

/// Run `f` on the engine behind `ep`; a panic becomes `on_panic` (and [`recover`]).
///
/// # Safety
/// `ep` is null or a live pointer from `stoq_engine_new`, used by one thread at a time.
pub unsafe fn with_engine<R>(ep: *mut Engine, on_panic: R, f: impl FnOnce(&mut Engine) -> R) -> R {
    if ep.is_null() {
        return on_panic;
    }
    // SAFETY: caller contract (one call at a time on one thread, pointer from Box::into_raw).
    let engine = unsafe { &mut *ep };
    match catch_unwind(AssertUnwindSafe(|| f(engine))) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: same pointer; the closure's borrow ended with the unwind.
            let engine = unsafe { &mut *ep };
            recover(engine);
            on_panic
        }
    }
}

/// After a caught panic: count it, keep its message, and close the connection that was being
/// worked on (`Engine::current`), which may be in any state.
pub fn recover(engine: &mut Engine) {
    engine.panics += 1;
    let msg = take_message();
    engine.last_error = format!("quinn engine panic: {msg}");
    let victim = engine.current.take();
    if let Some(ch) = victim {
        if let Some(c) = engine.remove(ch) {
            let drained = catch_unwind(AssertUnwindSafe(|| engine.endpoint_drained(ch)));
            let _ = take_message();
            if drained.is_ok() {
                engine.slab_freed(ch);
            }
            if !c.close_reported {
                let reason = format!("engine panic: {msg}").into_bytes();
                engine.close_reasons.insert(ch, reason);
                engine.events.push_back([EV_CLOSED as f64, ch as f64, INTERNAL_ERROR as f64, close_flags(false, false, false, false)]);
            }
        }
    }
    engine.retain_live_queue();
}

/// Catch a panic outside any engine (no engine to report it to).
pub fn guard<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        let _ = take_message();
        on_panic
    })
}
