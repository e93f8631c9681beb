"""The export file format: member names and layouts, the streaming writer, the reader."""
