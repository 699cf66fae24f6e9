"""The synthesis techniques as short recipes on the one loop, with presets named after the
papers."""
