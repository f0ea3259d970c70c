//! Subcommand bodies of the `easel` binary; main.rs only parses and maps errors.

pub mod batch;
pub mod devices;
pub mod generate;
pub mod inspect;

/// Keep Mesa's device-select Vulkan layer from printing
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." on headless
/// machines.
///
/// wgpu enables every WSI instance extension the loader offers, including
/// VK_KHR_wayland_surface; Mesa's implicit VK_LAYER_MESA_device_select then calls
/// `wl_display_connect` to find the compositor's GPU, and libwayland prints that
/// line when there is no session. The layer only reorders devices, and easel
/// picks its adapter itself, so on a machine with no Wayland session, when the
/// user has not asked the layer for anything (MESA_VK_DEVICE_SELECT, DRI_PRIME),
/// it is switched off through its documented `NODEVICE_SELECT=1` switch. Must run
/// before any thread starts (it sets an environment variable).
pub fn quiet_headless_vulkan() {
    let set = |name: &str| std::env::var_os(name).is_some();
    let headless = !set("XDG_RUNTIME_DIR") && !set("WAYLAND_DISPLAY");
    let layer_wanted = set("MESA_VK_DEVICE_SELECT") || set("DRI_PRIME") || set("NODEVICE_SELECT");
    if headless && !layer_wanted {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}
