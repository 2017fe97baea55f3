"""The discrete-event simulator of the mm and its locks."""
