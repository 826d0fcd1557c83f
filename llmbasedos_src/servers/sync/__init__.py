"""The sync server: rclone jobs (copy, sync, move, check) with progress, confinement and persistence."""
