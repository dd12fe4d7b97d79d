"""lmms-eval task configs (YAML) and their functions (`utils`); pass this folder as --include_path."""
