"""The built-in plugins: ordinary plugins, loaded through the same path as a user's."""
