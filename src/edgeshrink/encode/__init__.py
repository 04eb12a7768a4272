"""How bytes are written: bit packing, Huffman coding, gap coding, the .eshrink container."""
