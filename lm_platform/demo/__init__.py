"""The bundled demo corpus generator and its source paragraphs."""
