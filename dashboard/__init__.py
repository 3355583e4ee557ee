"""The static dashboard (`infopt dashboard build`): one HTML page and its PNG charts, built only from
committed result files, each number on the page tagged with the file and JSON pointer it comes from."""
