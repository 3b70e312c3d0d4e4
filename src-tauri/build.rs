//! Generates Tauri's context (config, capabilities, icons) for `tauri::generate_context!`.

fn main() {
    tauri_build::build();
}
