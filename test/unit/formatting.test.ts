import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseDocument } from "htmlparser2";
import type { ChildNode } from "domhandler";
import { escapeMarkdown, markdownToMatrix, matrixToMarkdown, stripReplyFallback, type MatrixText } from "../../src/convert/formatting.js";
import { propertyRuns } from "../support/property-runs.js";

const HTML = "org.matrix.custom.html";

/** Matrix HTML → markdown, with a body that must not be used. */
const fromHtml = (formatted_body: string, msgtype = "m.text") => matrixToMarkdown({ msgtype, body: "BODY MUST NOT BE USED", format: HTML, formatted_body });
const fromPlain = (body: string, msgtype = "m.text") => matrixToMarkdown({ msgtype, body });
const formatted = (body: string, formatted_body: string, msgtype: MatrixText["msgtype"] = "m.text"): MatrixText => ({
  msgtype,
  body,
  format: HTML,
  formatted_body,
});

// Normalises what Markdown cannot carry for plain text: trailing spaces and runs of blank lines.
function normalisePlain(text: string): string {
  const lines = text
    .replace(/\r\n?/g, "\n")
    .split("\n")
    .map((l) => l.replace(/[ \t]+$/, ""));
  const out: string[] = [];
  for (const line of lines) {
    if (line === "" && (out.length === 0 || out[out.length - 1] === "")) continue;
    out.push(line);
  }
  while (out.length > 0 && out[out.length - 1] === "") out.pop();
  return out.join("\n");
}

describe("matrixToMarkdown: Matrix HTML constructs", () => {
  const cases: Array<[name: string, html: string, markdown: string]> = [
    ["b", "<b>bold</b> text", "**bold** text"],
    ["strong", "<strong>bold</strong>", "**bold**"],
    ["i", "an <i>italic</i> word", "an _italic_ word"],
    // "_" cannot open after a letter; the letter becomes a character reference so emphasis still applies.
    ["em intraword", "un<em>believ</em>able", "u&#110;_believ_&#97;ble"],
    ["del", "<del>gone</del>", "~~gone~~"],
    ["s", "<s>gone</s>", "~~gone~~"],
    ["strike", "<strike>gone</strike>", "~~gone~~"],
    ["inline code", "run <code>ls -la</code> now", "run `ls -la` now"],
    ["inline code with a backtick", "<code>a`b</code>", "``a`b``"],
    ["inline code edged by backticks", "<code>`x`</code>", "`` `x` ``"],
    ["inline code keeps markdown characters raw", "<code>*a* _b_ [c]</code>", "`*a* _b_ [c]`"],
    ["empty code", "a<code></code>b", "ab"],
    ["adjacent code spans merge", "<code>a</code><code>b</code>", "`ab`"],
    ["code block with language", '<pre><code class="language-js">const a = 1;\nconsole.log(a);\n</code></pre>', "```js\nconst a = 1;\nconsole.log(a);\n```"],
    ["code block without language or trailing newline", "<pre><code>x = *y*</code></pre>", "```\nx = *y*\n```"],
    ["code block containing a fence", "<pre><code>```\ninner\n```\n</code></pre>", "````\n```\ninner\n```\n````"],
    ["code block keeps entities decoded", "<pre><code>a &lt; b &amp;&amp; c</code></pre>", "```\na < b && c\n```"],
    ["link", '<a href="https://example.com/page">a page</a>', "[a page](https://example.com/page)"],
    ["link whose text is its url", '<a href="https://example.com/x">https://example.com/x</a>', "<https://example.com/x>"],
    ["mailto link", '<a href="mailto:bob@example.com">bob@example.com</a>', "<bob@example.com>"],
    ["link destination with parentheses and spaces", '<a href="https://en.wikipedia.org/wiki/Foo_(bar) baz">Foo</a>', "[Foo](https://en.wikipedia.org/wiki/Foo_\\(bar\\)%20baz)"],
    ["bold inside link", '<a href="https://x.org">see <b>this</b></a>', "[see **this**](https://x.org)"],
    ["link inside bold", '<b>see <a href="https://x.org">this</a></b>', "**see [this](https://x.org)**"],
    ["italic inside bold", "<b>very <i>much</i> so</b>", "**very _much_ so**"],
    ["italic directly inside bold", "<b><i>both</i></b>", "**_both_**"],
    ["strike inside italic", "<i>a <del>b</del></i>", "_a ~~b~~_"],
    ["javascript: link keeps only its text", '<a href="javascript:alert(1)">click</a>', "click"],
    ["relative link keeps only its text", '<a href="/relative">rel</a>', "rel"],
    ["link without href", "<a>anchor</a>", "anchor"],
    ['"!" before a link does not make an image', 'Wow!<a href="https://x.org">link</a>', "Wow\\![link](https://x.org)"],
    ["mention keeps display text", '<a href="https://matrix.to/#/@alice:example.org">Alice</a>: hi', "Alice: hi"],
    ["mention display text is escaped", '<a href="https://matrix.to/#/@bob:example.org">*Bob*</a>', "\\*Bob\\*"],
    ["matrix.to room link stays a link", '<a href="https://matrix.to/#/#room:example.org">#room</a>', "[#room](https://matrix.to/#/#room:example.org)"],
    ["br", "one<br>two<br/>three", "one\ntwo\nthree"],
    ["paragraphs", "<p>one</p>\n<p>two</p>", "one\n\ntwo"],
    ["double br is a paragraph break", "a<br><br>b", "a\n\nb"],
    ["blockquote", "<blockquote>quoted</blockquote>reply", "> quoted\n\nreply"],
    ["blockquote with paragraphs", "<blockquote><p>q1</p><p>q2</p></blockquote>", "> q1\n>\n> q2"],
    ["nested blockquote", "<blockquote>a<blockquote>b</blockquote></blockquote>", "> a\n>\n> > b"],
    ["bullet list", "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n", "- one\n- two"],
    ["ordered list", "<ol><li>one</li><li>two</li></ol>", "1. one\n2. two"],
    ["ordered list with start", '<ol start="9"><li>nine</li><li>ten</li></ol>', "9. nine\n10. ten"],
    ["nested list", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n  - b\n- c"],
    ["ordered in bullet", "<ul><li>a<ol><li>b</li></ol></li></ul>", "- a\n  1. b"],
    ["nested ordered list not starting at 1", '<ul><li>a<ol start="3"><li>b</li></ol></li></ul>', "- a\n\n  3. b"],
    ["list item with paragraphs", "<ul><li><p>a</p><p>b</p></li></ul>", "- a\n\n  b"],
    ["adjacent lists stay apart", "<ul><li>a</li></ul><ul><li>b</li></ul>", "- a\n\n* b"],
    ["adjacent ordered lists stay apart", "<ol><li>a</li></ol><ol><li>b</li></ol>", "1. a\n\n1) b"],
    ["list item text that looks like a list", "<ul><li>- x</li></ul>", "- \\- x"],
    ["code block in a list", '<ul><li>x<pre><code class="language-sh">ls\n</code></pre></li></ul>', "- x\n\n  ```sh\n  ls\n  ```"],
    ["formatted list item", "<ol><li><b>bold</b> item</li></ol>", "1. **bold** item"],
    ["h1", "<h1>Title</h1>", "# Title"],
    ["h3 with formatting", "<h3>A <i>sub</i> title</h3>", "### A _sub_ title"],
    ["h6", "<h6>small</h6>", "###### small"],
    ["heading ending in a # run", "<h2>Issue #</h2>", "## Issue \\#"],
    ["heading C#", "<h2>C#</h2>", "## C#"],
    ["hr", "above<hr>below", "above\n\n___\n\nbelow"],
    ["hr in a list item is not read as a rule", "<ul><li><hr></li></ul>", "- ___"],
    ["reply fallback dropped", '<mx-reply><blockquote><a href="https://matrix.to/#/!r:x/$e">In reply to</a> hi</blockquote></mx-reply>my reply', "my reply"],
    ["unknown tags keep their text", '<span data-mx-color="#ff0000">red</span> <u>under</u> <sup>2</sup> <blink>x</blink>', "red under 2 x"],
    ["script and style are not text", "a<script>alert(1)</script><style>p{}</style>b", "ab"],
    ["entities decoded then escaped", "&lt;b&gt;not bold&lt;/b&gt; &amp;copy; 2*3*4 &quot;q&quot; caf&eacute;", '&lt;b>not bold&lt;/b> \\&copy; 2\\*3\\*4 "q" café'],
    ["html whitespace collapses", "  a \n\t b  <b> c </b> d ", "a b **c** d"],
    ["nbsp is kept", "a&nbsp;&nbsp;b", "a\u00a0\u00a0b"],
    ["nested same format once", "<b><b>x</b></b> <i><em>y</em></i>", "**x** _y_"],
    ["adjacent same-format siblings merge", "<b>a</b><b>b</b> <del>c</del><s>d</s>", "**ab** ~~cd~~"],
    ["whitespace-only formatting is dropped", "a<b> </b>b", "a b"],
    ["line starts that look like markdown", "1. no<br># no<br>- no<br>&gt; no<br>+ no<br>---<br>===", "1\\. no\n\\# no\n\\- no\n\\> no\n\\+ no\n\\---\n\\==="],
    ["custom emoji image", '<img data-mx-emoticon src="mxc://x/y" alt=":party:"> yay', ":party: yay"],
    ["unbalanced html", "<b>unclosed <i>tags", "**unclosed _tags_**"],
    ["stray closing tags", "a</b></i> b", "a b"],
    [
      "table",
      "<table><thead><tr><th>a</th><th>b|c</th></tr></thead><tbody><tr><td><i>1</i></td><td><code>x|y</code></td></tr></tbody></table>",
      "| a | b\\|c |\n| --- | --- |\n| _1_ | `x\\|y` |",
    ],
    ["emoji and unicode", "<b>héllo 👋🏽</b> 世界", "**héllo 👋🏽** 世界"],
  ];
  for (const [name, html, markdown] of cases) {
    it(name, () => assert.equal(fromHtml(html), markdown));
  }

  it("mentionToMarkdown hook maps Matrix users to network mentions", () => {
    const seen: Array<[string, string]> = [];
    const markdown = matrixToMarkdown(
      {
        body: "x",
        format: HTML,
        formatted_body: 'Hi <a href="https://matrix.to/#/%40alice%3Aexample.org">Alice</a> and <a href="matrix:u/bob:example.org">Bob</a>',
      },
      {
        mentionToMarkdown: (userId, display) => {
          seen.push([userId, display]);
          return userId === "@alice:example.org" ? "[@Alice Smith](mimi://example.com/u/alice)" : undefined;
        },
      },
    );
    assert.equal(markdown, "Hi [@Alice Smith](mimi://example.com/u/alice) and Bob");
    assert.deepEqual(seen, [
      ["@alice:example.org", "Alice"],
      ["@bob:example.org", "Bob"],
    ]);
  });

  it("falls back to the plain body when the HTML renders to nothing", () => {
    assert.equal(matrixToMarkdown({ body: "a*b", format: HTML, formatted_body: "<mx-reply>x</mx-reply>" }), "a\\*b");
  });

  it("ignores formatted_body without the HTML format", () => {
    assert.equal(matrixToMarkdown({ body: "*plain*", formatted_body: "<b>x</b>" }), "\\*plain\\*");
    assert.equal(matrixToMarkdown({ body: "*plain*", format: "org.example", formatted_body: "<b>x</b>" }), "\\*plain\\*");
  });
});

describe("matrixToMarkdown: delimiter edge cases", () => {
  // [name, Matrix HTML, markdown, what markdownToMatrix makes of it (formatted_body, else body)]
  const cases: Array<[name: string, html: string, markdown: string, back: string]> = [
    // CommonMark flanking: a closing ** after punctuation must be followed by space or punctuation.
    ["bold code before a letter", "<b><code>x</code></b>é", "**`x`**&#233;", "<strong><code>x</code></strong>é"],
    ["bold quote between letters", 'a<b>"q"</b>s', '&#97;**"q"**&#115;', "a<strong>&quot;q&quot;</strong>s"],
    ["italic parenthesis before a letter", "<i>(aside)</i>word", "_(aside)_&#119;ord", "<em>(aside)</em>word"],
    ["encoded letter after a literal backslash", "foo\\<b>(x)</b>", "foo\\\\**(x)**", "foo\\<strong>(x)</strong>"],
    ["intraword underscore next to an encoded letter", "<i>&gt;b_b<del>)x</del></i>", "_>b\\_&#98;~~)x~~_", "<em>&gt;b_b<del>)x</del></em>"],
    // Runs of the same delimiter merge, so same-kind spans that touch become one.
    ["bold spans around an empty element", '<b>a</b><img alt=""><b>b</b>', "**ab**", "<strong>ab</strong>"],
    ["code spans through a transparent wrapper", "<code>a</code><span><code>b</code></span>", "`ab`", "<code>ab</code>"],
    [
      "code spans around a wrapper holding a block",
      "<code>a</code><span><code>b</code><ol><li>c</li></ol></span>",
      "`ab`\n\n1. c",
      "<p><code>ab</code></p>\n<ol>\n<li>c</li>\n</ol>",
    ],
    ["bold then italic", "<b>a</b><i>b</i>", "**a**_b_", "<strong>a</strong><em>b</em>"],
    // Characters at a text node's end are escaped: the next node decides what they would become.
    ["backslash before moved-out space", "<b>a\\ </b>b", "**a\\\\** b", "<strong>a\\</strong> b"],
    ["< at a node end", "a&lt;<span>b</span>", "a&lt;b", "a<b"],
    ["& at a node end", "a&amp;<span>amp;</span>", "a\\&amp;", "a&amp;"],
    ["link text that would be a reference definition", '<a href="https://x.y">x<code>a]:b</code></a>', "[xa\\]:b](https://x.y)", '<a href="https://x.y">xa]:b</a>'],
    ["empty list items are dropped", "<ul><li></li><li>a<ul><li><br></li><li>b</li></ul></li></ul>", "- a\n  - b", "<ul>\n<li>a\n<ul>\n<li>b</li>\n</ul>\n</li>\n</ul>"],
    ["empty link shows its url", '<a href="https://x.y/"> </a>', "<https://x.y/>", '<a href="https://x.y/">https://x.y/</a>'],
  ];
  for (const [name, html, markdown, back] of cases) {
    it(name, () => {
      assert.equal(fromHtml(html), markdown);
      const result = markdownToMatrix(markdown);
      assert.equal(result.formatted_body ?? result.body, back);
    });
  }
});

describe("matrixToMarkdown: escaping plain bodies", () => {
  const cases: Array<[body: string, markdown: string]> = [
    ["hello", "hello"],
    ["2*3*4", "2\\*3\\*4"],
    ["snake_case_name and __init__ and _x_", "snake_case_name and \\_\\_init\\_\\_ and \\_x\\_"],
    ["`code` ~~strike~~ [link](url) ![img](x)", "\\`code\\` \\~\\~strike\\~\\~ \\[link\\](url) !\\[img\\](x)"],
    ["# not a heading", "\\# not a heading"],
    ["#hashtag", "#hashtag"],
    ["> not a quote", "\\> not a quote"],
    ["a > b < c <3", "a > b < c <3"],
    ["<b>tag</b> <!-- c --> <http://x.y> <a@b.co>", "&lt;b>tag&lt;/b> &lt;!-- c --> &lt;http://x.y> &lt;a@b.co>"],
    ["AT&T &amp; &#42; &x", "AT&T \\&amp; \\&#42; &x"],
    ["- item\n+ item\n* item\n1. item\n2) item\n1.5 kg", "\\- item\n\\+ item\n\\* item\n1\\. item\n2\\) item\n1.5 kg"],
    ["-5 degrees\n---\n===\n- - -", "-5 degrees\n\\---\n\\===\n\\- - -"],
    ["| a | b |\n|---|:-:|", "| a | b |\n\\|---|:-:|"],
    ["    indented\n\ttab", "&#32;   indented\n&#9;tab"],
    ["back\\slash \\* C:\\dir \\", "back\\slash \\\\\\* C:\\dir \\\\"],
    ["https://example.com/a_b?x=1", "https://example.com/a_b?x=1"],
    // Trailing punctuation (as in GFM's autolink rules) is not part of the URL.
    ["see https://example.com/_next/*x*.", "see <https://example.com/_next/*x>\\*."],
    ["(https://example.com/a)", "(https://example.com/a)"],
    ["/me is not an emote here", "\\/me is not an emote here"],
    ["line one\nline two\n\nnew paragraph", "line one\nline two\n\nnew paragraph"],
    ["emoji 🎉 ünïcödé 日本語 👨‍👩‍👧", "emoji 🎉 ünïcödé 日本語 👨‍👩‍👧"],
    ["_émoji_ü", "\\_émoji_ü"],
    ["ü_é_ü", "ü_é_ü"],
  ];
  for (const [body, markdown] of cases) {
    it(JSON.stringify(body), () => {
      assert.equal(fromPlain(body), markdown);
      // And the escaped text reads back as exactly the original plain text.
      const back = markdownToMatrix(markdown);
      if (back.formatted_body === undefined) assert.equal(back.body, body);
    });
  }

  it("plain text with markdown characters survives the round trip exactly", () => {
    const body = "* _ ` # [ ] < > & | ~ \\ ! ( ) 2*3*4 a_b_c <tag> &amp; [x]: y\n# h\n> q\n1. n\n```\n~~~";
    assert.deepEqual(markdownToMatrix(matrixToMarkdown({ body })), { msgtype: "m.text", body });
  });

  it("escapeMarkdown is exported for callers building mention markdown", () => {
    assert.equal(escapeMarkdown("[*Alice*]"), "\\[\\*Alice\\*\\]");
  });
});

describe("markdownToMatrix", () => {
  const cases: Array<[name: string, markdown: string, expected: MatrixText]> = [
    ["plain text", "hello", { msgtype: "m.text", body: "hello" }],
    ["plain multi-line", "a\nb\n\nc", { msgtype: "m.text", body: "a\nb\n\nc" }],
    ["escapes resolve to plain", "2\\*3\\*4 \\# \\[x\\]", { msgtype: "m.text", body: "2*3*4 # [x]" }],
    ["entities resolve to plain", "&lt;b> &amp; &copy;", { msgtype: "m.text", body: "<b> & ©" }],
    ["bold", "**bold**", formatted("**bold**", "<strong>bold</strong>")],
    ["bold underscores", "__bold__", formatted("__bold__", "<strong>bold</strong>")],
    ["italic", "*it* and _it_", formatted("*it* and _it_", "<em>it</em> and <em>it</em>")],
    ["strikethrough uses del", "~~gone~~", formatted("~~gone~~", "<del>gone</del>")],
    ["inline code", "`a < b`", formatted("`a < b`", "<code>a &lt; b</code>")],
    ["fenced code with language", "```python\nprint(1)\n```", formatted("```python\nprint(1)\n```", '<pre><code class="language-python">print(1)\n</code></pre>')],
    ["indented code", "    x = 1", formatted("    x = 1", "<pre><code>x = 1\n</code></pre>")],
    ["link", "[site](https://example.com)", formatted("[site](https://example.com)", '<a href="https://example.com">site</a>')],
    ["link title dropped", '[s](https://e.com "T")', formatted('[s](https://e.com "T")', '<a href="https://e.com">s</a>')],
    ["autolink", "<https://example.com>", formatted("<https://example.com>", '<a href="https://example.com">https://example.com</a>')],
    ["email autolink", "<a@b.co>", formatted("<a@b.co>", '<a href="mailto:a@b.co">a@b.co</a>')],
    ["no autolink extension: bare urls stay text", "see https://example.com and www.example.com", { msgtype: "m.text", body: "see https://example.com and www.example.com" }],
    ["javascript: link keeps only its text", "[x](javascript:alert(1))", { msgtype: "m.text", body: "x" }],
    ["non-Matrix scheme keeps only its text", "[@Alice](mimi://example.com/u/alice) hi", { msgtype: "m.text", body: "@Alice hi" }],
    ["image becomes a link", "![cat](https://e.com/c.png)", formatted("![cat](https://e.com/c.png)", '<a href="https://e.com/c.png">cat</a>')],
    ["mxc image stays an image", "![e](mxc://s/m)", formatted("![e](mxc://s/m)", '<img src="mxc://s/m" alt="e">')],
    [
      "nested formatting",
      "**bold [link *it*](https://x.org)**",
      formatted("**bold [link *it*](https://x.org)**", '<strong>bold <a href="https://x.org">link <em>it</em></a></strong>'),
    ],
    ["line break inside formatting", "**a\nb**", formatted("**a\nb**", "<strong>a<br>b</strong>")],
    ["heading", "# Title", formatted("# Title", "<h1>Title</h1>")],
    ["setext heading", "Title\n---", formatted("Title\n---", "<h2>Title</h2>")],
    ["paragraphs keep their p", "**a**\n\nb", formatted("**a**\n\nb", "<p><strong>a</strong></p>\n<p>b</p>")],
    ["blockquote", "> quoted\n\nreply", formatted("> quoted\n\nreply", "<blockquote>\n<p>quoted</p>\n</blockquote>\n<p>reply</p>")],
    ["bullet list", "- a\n- b", formatted("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>")],
    ["ordered list with start", "3. a\n4. b", formatted("3. a\n4. b", '<ol start="3">\n<li>a</li>\n<li>b</li>\n</ol>')],
    ["task list is text", "- [ ] todo\n- [x] done", formatted("- [ ] todo\n- [x] done", "<ul>\n<li>[ ] todo</li>\n<li>[x] done</li>\n</ul>")],
    ["hr", "a\n\n***\n\nb", formatted("a\n\n***\n\nb", "<p>a</p>\n<hr>\n<p>b</p>")],
    [
      "table without alignment styles",
      "| a | b |\n|:--|--:|\n| 1 | 2 |",
      formatted(
        "| a | b |\n|:--|--:|\n| 1 | 2 |",
        "<table>\n<thead>\n<tr>\n<th>a</th>\n<th>b</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>1</td>\n<td>2</td>\n</tr>\n</tbody>\n</table>",
      ),
    ],
    ["raw html is text, never markup", "<b>hi</b> <script>alert(1)</script>", { msgtype: "m.text", body: "<b>hi</b> <script>alert(1)</script>" }],
    [
      "raw html next to formatting is escaped",
      "**x** <img src=x onerror=alert(1)>",
      formatted("**x** <img src=x onerror=alert(1)>", "<strong>x</strong> &lt;img src=x onerror=alert(1)&gt;"),
    ],
    ["html block is text", "<div>\n*x*\n</div>", formatted("<div>\n*x*\n</div>", "&lt;div&gt;<br><em>x</em><br>&lt;/div&gt;")],
    ["emote", "/me waves", { msgtype: "m.emote", body: "waves" }],
    ["formatted emote", "/me waves **hard**", formatted("waves **hard**", "waves <strong>hard</strong>", "m.emote")],
    ["escaped /me is text", "\\/me waves", { msgtype: "m.text", body: "/me waves" }],
    ["/me needs its space", "/meh", { msgtype: "m.text", body: "/meh" }],
    ["unicode and emoji", "**héllo 👋🏽** 世界", formatted("**héllo 👋🏽** 世界", "<strong>héllo 👋🏽</strong> 世界")],
    ["only a link definition is kept as typed", "[a]: https://x.org", { msgtype: "m.text", body: "[a]: https://x.org" }],
    ["empty", "", { msgtype: "m.text", body: "" }],
  ];
  for (const [name, markdown, expected] of cases) {
    it(name, () => assert.deepEqual(markdownToMatrix(markdown), expected));
  }

  it("plain results carry no format keys at all", () => {
    assert.deepEqual(Object.keys(markdownToMatrix("hello")).sort(), ["body", "msgtype"]);
  });

  it("rewriteLink maps network links to Matrix ones", () => {
    const result = markdownToMatrix("Kudos to [@Alice](mimi://example.com/u/alice)!", {
      rewriteLink: (href) => (href.startsWith("mimi://") ? "https://matrix.to/#/@wa_alice:example.org" : undefined),
    });
    assert.deepEqual(result, formatted("Kudos to [@Alice](mimi://example.com/u/alice)!", 'Kudos to <a href="https://matrix.to/#/@wa_alice:example.org">@Alice</a>!'));
  });

  it("rewriteLink cannot smuggle a disallowed scheme", () => {
    assert.deepEqual(markdownToMatrix("[x](https://a.b)", { rewriteLink: () => "javascript:alert(1)" }), {
      msgtype: "m.text",
      body: "x",
    });
  });

  it("only emits tags from the Matrix formatted_body allow-list", () => {
    const allowed = new Set([
      "del",
      "h1",
      "h2",
      "h3",
      "h4",
      "h5",
      "h6",
      "blockquote",
      "p",
      "a",
      "ul",
      "ol",
      "sup",
      "sub",
      "li",
      "b",
      "i",
      "u",
      "strong",
      "em",
      "s",
      "code",
      "hr",
      "br",
      "div",
      "table",
      "thead",
      "tbody",
      "tr",
      "th",
      "td",
      "caption",
      "pre",
      "span",
      "img",
      "details",
      "summary",
    ]);
    const everything = [
      "# h1\n## h2\n###### h6",
      "**b** *i* ~~s~~ `c` [l](https://x.y) ![i](https://x/i.png) ![m](mxc://a/b) <https://q.r>",
      "> q\n\n- a\n- b\n\n3. c\n\n---\n\n```js\nx\n```\n\n    ind",
      "| a |\n|---|\n| b |",
      "<script>x</script> <iframe src=x> <div onclick=y>",
    ].join("\n\n");
    const html = markdownToMatrix(everything).formatted_body ?? "";
    for (const [, tag] of html.matchAll(/<\/?([a-zA-Z0-9-]+)/g)) assert.ok(allowed.has(tag!), `unexpected <${tag}> in ${html}`);
    for (const [, attrs] of html.matchAll(/<[a-zA-Z0-9-]+([^>]*)>/g)) {
      for (const [, attr] of attrs!.matchAll(/ ([a-z-]+)=/g)) {
        assert.ok(["href", "src", "alt", "class", "start"].includes(attr!), `unexpected ${attr}=`);
      }
    }
    assert.ok(html.includes("&lt;div onclick=y&gt;"));
  });
});

describe("reply fallbacks", () => {
  it("strips a plain reply fallback", () => {
    assert.equal(stripReplyFallback("> <@alice:example.org> original\n> second line\n\nmy reply"), "my reply");
  });
  it("keeps multi-line replies after the fallback", () => {
    assert.equal(stripReplyFallback("> <@a:b> x\n>\n> y\n\nline 1\n\nline 2"), "line 1\n\nline 2");
  });
  it("leaves a quote without a following blank line alone", () => {
    assert.equal(stripReplyFallback("> quoted\nnot a fallback"), "> quoted\nnot a fallback");
  });
  it("leaves bodies without a leading quote alone", () => {
    assert.equal(stripReplyFallback("hello\n> later\n\nx"), "hello\n> later\n\nx");
  });
  it("leaves a body that is only a quote alone", () => {
    assert.equal(stripReplyFallback("> just a quote"), "> just a quote");
  });
  it("drops <mx-reply> from HTML", () => {
    const html =
      '<mx-reply><blockquote><a href="https://matrix.to/#/!room:x/$ev">In reply to</a> <a href="https://matrix.to/#/@a:x">@a:x</a><br>original <b>text</b></blockquote></mx-reply>the <i>reply</i>';
    assert.equal(fromHtml(html), "the _reply_");
  });
});

describe("emotes", () => {
  it("prefixes a plain emote with /me", () => assert.equal(fromPlain("waves *hello*", "m.emote"), "/me waves \\*hello\\*"));
  it("prefixes a formatted emote with /me", () => assert.equal(fromHtml("waves <b>hard</b>", "m.emote"), "/me waves **hard**"));
  it("round-trips an emote", () => {
    assert.deepEqual(markdownToMatrix(fromPlain("dances", "m.emote")), { msgtype: "m.emote", body: "dances" });
    assert.deepEqual(markdownToMatrix(fromHtml("<i>dances</i>", "m.emote")), formatted("_dances_", "<em>dances</em>", "m.emote"));
  });
  it("m.notice is sent like m.text", () => assert.equal(fromPlain("beep", "m.notice"), "beep"));
});

describe("round trips", () => {
  // Matrix HTML → markdown → Matrix HTML keeps the meaning (tags canonicalised: b→strong, i→em, s→del).
  const htmlCases: Array<[html: string, back: string]> = [
    ["<b>bold</b>", "<strong>bold</strong>"],
    ["<i>it</i> and <em>em</em>", "<em>it</em> and <em>em</em>"],
    ["<s>x</s> <strike>y</strike> <del>z</del>", "<del>x</del> <del>y</del> <del>z</del>"],
    ["<code>a`b</code>", "<code>a`b</code>"],
    ["<b>very <i>much</i></b>", "<strong>very <em>much</em></strong>"],
    ['<a href="https://x.org/a_(b)">see <b>this</b></a>', '<a href="https://x.org/a_(b)">see <strong>this</strong></a>'],
    ['<a href="https://x.org">https://x.org</a>', '<a href="https://x.org">https://x.org</a>'],
    // Line and paragraph breaks alone need no HTML: they come back as plain text.
    ["a<br>b", "a\nb"],
    ["<p>a</p><p>b</p>", "a\n\nb"],
    ["<blockquote>q</blockquote><p>r</p>", "<blockquote>\n<p>q</p>\n</blockquote>\n<p>r</p>"],
    ["<ul><li>a<ul><li>b</li></ul></li></ul>", "<ul>\n<li>a\n<ul>\n<li>b</li>\n</ul>\n</li>\n</ul>"],
    ['<ol start="4"><li>a</li><li>b</li></ol>', '<ol start="4">\n<li>a</li>\n<li>b</li>\n</ol>'],
    ['<pre><code class="language-rust">fn main() {}\n</code></pre>', '<pre><code class="language-rust">fn main() {}\n</code></pre>'],
    ["<h2>T <i>x</i></h2>", "<h2>T <em>x</em></h2>"],
    ["a<hr>b", "<p>a</p>\n<hr>\n<p>b</p>"],
    ["1. x &lt;b&gt; *y* &amp;amp;", "1. x <b> *y* &amp;"],
    ["<table><tr><th>h</th></tr><tr><td>c|d</td></tr></table>", "<table>\n<thead>\n<tr>\n<th>h</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>c|d</td>\n</tr>\n</tbody>\n</table>"],
  ];
  for (const [html, back] of htmlCases) {
    it(`HTML ${html}`, () => {
      const result = markdownToMatrix(fromHtml(html));
      assert.equal(result.formatted_body ?? result.body, back);
    });
  }

  // Markdown → Matrix → markdown gives the same markdown (in our canonical spelling).
  const markdownCases: Array<[markdown: string, back: string]> = [
    ["**bold** _it_ ~~del~~ `code`", "**bold** _it_ ~~del~~ `code`"],
    ["*it*", "_it_"],
    ["__bold__ *it*", "**bold** _it_"],
    ["[a **b**](https://x.org)", "[a **b**](https://x.org)"],
    ["<https://x.org/p?q=1>", "<https://x.org/p?q=1>"],
    ["> quote\n\ntext", "> quote\n\ntext"],
    ["- a\n  - b\n- c", "- a\n  - b\n- c"],
    ["3. a\n4. b", "3. a\n4. b"],
    ["# H\n\n## I", "# H\n\n## I"],
    ["```js\nlet x = `y`;\n```", "```js\nlet x = `y`;\n```"],
    ["line\nbreak **x**", "line\nbreak **x**"],
    ["a\n\n---\n\nb", "a\n\n___\n\nb"],
    ["| a | b |\n| --- | --- |\n| 1 | 2 |", "| a | b |\n| --- | --- |\n| 1 | 2 |"],
    ["/me waves **hi**", "/me waves **hi**"],
    ["2\\*3 and \\_x\\_", "2\\*3 and \\_x\\_"],
  ];
  for (const [markdown, back] of markdownCases) {
    it(`markdown ${JSON.stringify(markdown)}`, () => assert.equal(matrixToMarkdown(markdownToMatrix(markdown)), back));
  }

  it("any plain text survives Matrix → markdown → Matrix", () => {
    const unit = fc.constantFrom(..."abcXYZ019 \t\n!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "é", "ß", "日", "😀", "\u00a0");
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 60 }), (body) => {
        fc.pre(!body.includes("://"));
        const back = markdownToMatrix(matrixToMarkdown({ body }));
        assert.equal(back.msgtype, "m.text");
        assert.equal(back.formatted_body, undefined, `formatted for ${JSON.stringify(body)}`);
        assert.equal(normalisePlain(back.body), normalisePlain(body), `body ${JSON.stringify(body)}`);
      }),
      { numRuns: propertyRuns(3000) },
    );
  });
});

describe("round trips: generated documents", () => {
  // Structure and per-character formatting of Matrix HTML, ignoring what markdown cannot express
  // (p vs br, tight vs loose lists, tag spelling, whitespace).
  const INLINE: Record<string, string> = { b: "B", strong: "B", i: "I", em: "I", del: "S", s: "S", code: "C", pre: "C", a: "L" };
  const BLOCKS = new Set(["ul", "ol", "li", "blockquote", "h2", "pre", "hr"]);
  function signature(html: string): string {
    const out: string[] = [];
    const walk = (nodes: readonly ChildNode[], marks: string): void => {
      for (const node of nodes) {
        if (node.type === "text") {
          for (const c of (node as { data: string }).data) out.push(/\s/.test(c) ? " " : marks ? `${c}{${marks}}` : c);
        } else if ("attribs" in node) {
          const name = node.name;
          const start = name === "ol" && node.attribs.start && node.attribs.start !== "1" ? node.attribs.start : "";
          if (BLOCKS.has(name)) out.push(`<${name}${start}>`);
          if (name === "br" || name === "p") out.push(" ");
          const mark = INLINE[name];
          walk(node.children, mark && !marks.includes(mark) ? [...marks, mark].sort().join("") : marks);
          if (BLOCKS.has(name)) out.push(`</${name}>`);
          if (name === "p") out.push(" ");
        }
      }
    };
    walk(parseDocument(html).children, "");
    return out
      .join("")
      .replace(/ +/g, " ")
      .replace(/ ?(<\/?[a-z0-9]+>) ?/g, "$1")
      .trim();
  }
  const escapeHtml = (t: string) => t.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const text = fc
    .string({ unit: fc.constantFrom(..."ab *_~`.,!:()[]#-\\<>&1|", "é", "😀"), minLength: 1, maxLength: 5 })
    .filter((t) => t.trim() !== "")
    .map(escapeHtml);
  const { block } = fc.letrec<{ inline: string; block: string }>((tie) => ({
    inline: fc.oneof(
      { depthSize: "small" },
      text,
      text,
      fc
        .record({ tag: fc.constantFrom("b", "i", "del", "a", "span"), kids: fc.array(tie("inline"), { minLength: 1, maxLength: 3 }) })
        .map(({ tag, kids }) => (tag === "a" ? `<a href="https://x.y/">${kids.join("")}</a>` : `<${tag}>${kids.join("")}</${tag}>`)),
      text.map((t) => `<code>${t}</code>`),
    ),
    block: fc.oneof(
      { depthSize: "small" },
      fc.array(tie("inline"), { minLength: 1, maxLength: 3 }).map((k) => `<p>${k.join("")}</p>`),
      fc.array(tie("block"), { minLength: 1, maxLength: 2 }).map((k) => `<blockquote>${k.join("")}</blockquote>`),
      fc
        .record({
          tag: fc.constantFrom("ul", "ol"),
          start: fc.constantFrom("", ' start="4"'),
          items: fc.array(
            fc.oneof(
              fc.array(tie("inline"), { minLength: 1, maxLength: 2 }).map((k) => k.join("")),
              fc.array(tie("block"), { minLength: 1, maxLength: 2 }).map((k) => k.join("")),
            ),
            { minLength: 1, maxLength: 3 },
          ),
        })
        .map(({ tag, start, items }) => `<${tag}${tag === "ol" ? start : ""}>${items.map((i) => `<li>${i}</li>`).join("")}</${tag}>`),
      fc.array(tie("inline"), { minLength: 1, maxLength: 2 }).map((k) => `<h2>${k.join("")}</h2>`),
      text.map((t) => `<pre><code>${t}</code></pre>`),
      fc.constant("<hr>"),
    ),
  }));

  it("Matrix HTML keeps its structure and formatting through markdown", () => {
    fc.assert(
      fc.property(
        fc.array(block, { minLength: 1, maxLength: 4 }).map((b) => b.join("")),
        (html) => {
          const markdown = fromHtml(html);
          // Documented degradation: a "]:" in a link's code span drops that link text's inner formatting.
          fc.pre(!markdown.includes("]:"));
          const back = markdownToMatrix(markdown);
          const result = back.formatted_body ?? escapeHtml(back.body).replace(/\n/g, "<br>");
          assert.equal(signature(result), signature(html), `markdown: ${JSON.stringify(markdown)}`);
        },
      ),
      { numRuns: propertyRuns(1500) },
    );
  });
});

describe("robustness", () => {
  it("huge inputs convert without throwing or truncating", () => {
    const big = "word *star* _under_ `tick` <tag> &amp; ".repeat(50_000);
    const markdown = fromPlain(big);
    assert.equal(markdownToMatrix(markdown).body, big.trimEnd());
    const html = "<p><b>bold</b> text <i>it</i></p>".repeat(20_000);
    assert.equal(fromHtml(html).split("\n\n").length, 20_000);
  });

  it("deeply nested HTML does not overflow the stack", () => {
    const depth = 20_000;
    for (const tag of ["b", "blockquote", "ul><li", "span", "div", "a href='https://x.y'"]) {
      const open = `<${tag}>`.repeat(depth);
      const result = fromHtml(`${open}deep`);
      assert.ok(result.includes("deep"), tag);
    }
  });

  const deeplyNested = ["> ".repeat(10_000) + "x", "- ".repeat(10_000) + "x", "*".repeat(10_000) + "x" + "*".repeat(10_000), "[".repeat(10_000) + "x" + "](y)".repeat(10_000)];
  it("deeply nested markdown converts without throwing and keeps its text in the body", () => {
    for (const input of deeplyNested) assert.ok(markdownToMatrix(input).body.includes("x"), `the text survives in the body of ${input.slice(0, 8)}…`);
  });

  it("markdown nested deeper than the parser goes is sent as typed, never shortened", () => {
    for (const input of deeplyNested.slice(0, 2)) {
      assert.deepEqual(markdownToMatrix(input), { msgtype: "m.text", body: input }, `quotes or lists 10,000 deep go as typed: ${input.slice(0, 8)}…`);
    }
    for (const input of deeplyNested.slice(2)) {
      const html = markdownToMatrix(input).formatted_body;
      if (html !== undefined) assert.ok(html.includes("x"), `the text survives in the HTML of ${input.slice(0, 8)}…`);
    }
    for (const depth of [5, 17]) {
      const out = markdownToMatrix("> ".repeat(depth) + "x");
      assert.equal((out.formatted_body?.match(/<blockquote>/g) ?? []).length, depth, `${depth} quotes in each other are still formatted`);
    }
  });

  it("many siblings and long runs are fine", () => {
    assert.equal(fromHtml("<b>x</b>".repeat(200_000)), `**${"x".repeat(200_000)}**`);
    const plain = " ".repeat(100_000) + "x" + "_".repeat(100_000) + "\\".repeat(100_000);
    assert.equal(markdownToMatrix(fromPlain(plain)).body, plain, "escaped and back, every character");
    assert.equal((markdownToMatrix("a\\\n".repeat(50_000)).body.match(/a/g) ?? []).length, 50_000, "every line's text is kept");
  });

  it("control characters, lone surrogates and NUL convert without throwing and keep the text around them", () => {
    const nasty = "a\u0000b\u0001\u001b[31m\u007f\ud800\udfff\ufffe\u2028\u2029\r\n\r";
    const letters = (s: string) => s.replace(/[^ab]/g, "");
    assert.equal(letters(fromPlain(nasty)), "ab");
    assert.equal(letters(fromHtml(nasty + "<b>" + nasty)), "abab");
    assert.equal(letters(markdownToMatrix(nasty).body), "ab");
    assert.equal(markdownToMatrix(fromPlain("a\u0001b")).body, "a\u0001b");
  });

  it("malformed events do not throw", () => {
    assert.equal(matrixToMarkdown({ body: undefined as unknown as string }), "");
    assert.equal(matrixToMarkdown({ body: "x", format: HTML, formatted_body: 42 as unknown as string }), "x");
    assert.deepEqual(markdownToMatrix(undefined as unknown as string), { msgtype: "m.text", body: "" });
  });

  it("random HTML and markdown never throw, and always give a text message (HTML only with its format)", () => {
    const unit = fc.constantFrom(
      ..."<>/ab =\"'&;#*_`[]()!\n-",
      "<b>",
      "</b>",
      '<a href="https://x.y">',
      "</a>",
      "<ul>",
      "<li>",
      "<pre>",
      "<code>",
      "<blockquote>",
      "<mx-reply>",
      "<table>",
      "<tr>",
      "<td>",
      "<br>",
      "&amp;",
      "&#0;",
    );
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 80 }), (input) => {
        const markdown = fromHtml(input);
        assert.equal(typeof markdown, "string");
        for (const result of [markdownToMatrix(markdown), markdownToMatrix(input)]) {
          assert.equal(result.msgtype, "m.text");
          assert.equal(typeof result.body, "string");
          assert.equal(result.formatted_body === undefined, result.format === undefined, "formatted_body comes with its format");
        }
      }),
      { numRuns: propertyRuns(2000) },
    );
  });
});
