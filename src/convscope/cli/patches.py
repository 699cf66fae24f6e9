"""convscope CLI commands (patches)."""
