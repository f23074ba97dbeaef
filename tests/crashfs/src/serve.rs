//! `crashfs mount` in the foreground: serve until unmounted (`crashfs umount`, umount(8)),
//! a SIGTERM, SIGINT or SIGHUP, or — with `--until-stdin-closes` — the end of standard
//! input, whichever comes first. The last two unmount it themselves (lazily if busy).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use fuser::SessionUnmounter;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{info, warn};

use crate::error::Error;
use crate::mount;

/// How `crashfs mount` stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Unmount and return when standard input reaches its end (a test holds the other end
    /// of a pipe, so the mount never outlives it).
    pub until_stdin_closes: bool,
}

/// Mounts a crashfs over `backing` at `mountpoint` and serves it on this thread until it
/// is unmounted.
pub fn serve(backing: &Path, mountpoint: &Path, options: ServeOptions) -> Result<(), Error> {
    let (mut session, _shared) = mount::session(backing, mountpoint)?;
    let unmounter = Arc::new(Mutex::new(session.unmount_callable()));
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|error| Error::Mount {
        mountpoint: mountpoint.to_owned(),
        error,
    })?;
    let signals_handle = signals.handle();
    {
        let unmounter = Arc::clone(&unmounter);
        let mountpoint = mountpoint.to_owned();
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                info!(signal, "stopping on a signal");
                stop(&unmounter, &mountpoint);
            }
        });
    }
    if options.until_stdin_closes {
        let unmounter = Arc::clone(&unmounter);
        let mountpoint = mountpoint.to_owned();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            info!("stopping: standard input closed");
            stop(&unmounter, &mountpoint);
        });
    }
    let served = session.run();
    signals_handle.close();
    info!(mountpoint = %mountpoint.display(), "unmounted");
    served.map_err(|error| Error::Mount {
        mountpoint: mountpoint.to_owned(),
        error,
    })
}

/// Unmounts, or detaches the mount if something still uses it (the session then ends
/// when the last user lets go).
fn stop(unmounter: &Mutex<SessionUnmounter>, mountpoint: &Path) {
    let result = unmounter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unmount();
    if let Err(e) = result {
        warn!(error = %e, "unmount failed; detaching");
        if let Err(e) = mount::detach(mountpoint) {
            warn!(error = %e, "cannot detach either");
        }
    }
}
