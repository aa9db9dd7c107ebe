#!/usr/bin/env python3
"""Write the small template files the filename fixture is made from (stdlib only).

blank.*: no title or author inside, so calibre and bookferry take both from the file's name.
title-only.*, author-only.*: one of the two inside, the other from the name.
"""
import base64, io, os, zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def pdf(info):
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    if info:
        objs.append(b"<< " + info + b" >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(out.tell())
        out.write(b"%d 0 obj\n" % i + o + b"\nendobj\n")
    x = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for o in offs:
        out.write(b"%010d 00000 n \n" % o)
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objs) + 1)
    if info:
        trailer += b" /Info %d 0 R" % len(objs)
    out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % x)
    return out.getvalue()


# A 1×1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def epub(dc):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" '
                   'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                   '<rootfile full-path="content.opf" media-type="application/oebps-package+xml"/>'
                   "</rootfiles></container>")
        z.writestr("content.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" '
                   'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
                   '<dc:identifier id="id">urn:uuid:6f1c0c6e-0000-4000-8000-000000000001</dc:identifier>'
                   + dc + '<dc:language>en</dc:language><meta name="cover" content="c"/></metadata>'
                   '<manifest>'
                   '<item id="t" href="t.html" media-type="application/xhtml+xml"/>'
                   '<item id="c" href="c.png" media-type="image/png"/></manifest>'
                   '<spine><itemref idref="t"/></spine></package>')
        # A cover of its own, so calibre does not render the first page for one (slow, noisy).
        z.writestr("c.png", PNG)
        z.writestr("t.html", '<html xmlns="http://www.w3.org/1999/xhtml"><head><title></title></head>'
                   "<body><p>Some text.</p></body></html>")
    return out.getvalue()


def docx(core):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        rels = ""
        over = ""
        if core is not None:
            rels = ('<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/'
                    'relationships/metadata/core-properties" Target="docProps/core.xml"/>')
            over = ('<Override PartName="/docProps/core.xml" ContentType="application/'
                    'vnd.openxmlformats-package.core-properties+xml"/>')
            z.writestr("docProps/core.xml",
                       '<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/'
                       'package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/">'
                       + core + "</cp:coreProperties>")
        z.writestr("[Content_Types].xml",
                   '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                   'content-types"><Default Extension="rels" ContentType="application/'
                   'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" '
                   'ContentType="application/xml"/><Override PartName="/word/document.xml" '
                   'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.'
                   'document.main+xml"/>' + over + "</Types>")
        z.writestr("_rels/.rels",
                   '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
                   'openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
                   'Target="word/document.xml"/>' + rels + "</Relationships>")
        z.writestr("word/document.xml",
                   '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                   'wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Some text.</w:t></w:r></w:p>'
                   "</w:body></w:document>")
    return out.getvalue()


FILES = {
    "blank.txt": b"Some text, and no title in it.\n",
    "blank.pdf": pdf(None),
    "blank.epub": epub(""),
    "blank.docx": docx(None),
    "title-only.pdf": pdf(b"/Title (Inner Title)"),
    "author-only.pdf": pdf(b"/Author (Inner Author)"),
    "title-only.epub": epub("<dc:title>Inner Title</dc:title>"),
    "author-only.epub": epub("<dc:creator>Inner Author</dc:creator>"),
    "title-only.docx": docx("<dc:title>Inner Title</dc:title>"),
    "author-only.docx": docx("<dc:creator>Inner Author</dc:creator>"),
}

if __name__ == "__main__":
    for name, data in FILES.items():
        with open(os.path.join(HERE, "templates", name), "wb") as f:
            f.write(data)
