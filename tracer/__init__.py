"""Live recording with bcc. Imported only by `mmreplay record` and `mmreplay doctor`."""
