"""Input/output: prediction PNGs (`masks`), video probing and streamed decoding (`video`), 16 kHz audio
(`audio`), overlay rendering (`render`), mp4 writing with the original audio (`mux`), COCO RLE (`rle`);
`ffmpeg` holds what they share (the bundled binary, error reporting)."""
