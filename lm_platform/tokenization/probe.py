"""A multilingual probe set, and the check that an extended tokenizer leaves text without any
character of the new language exactly as the base encoded it.

The probe texts are written by the project (not copied from anywhere): at least 20 sentences each in
English, code, Japanese, German, Turkish, Polish, Russian, Greek and Czech, written without any character
of V (Vietnamese letters outside ASCII; Polish without ó, Czech without á é í ó ú ý, Turkish without â).
French, Portuguese and Spanish share letters with V (à é ê ã õ á í ó ú), so extension may change their
encoding where those letters occur; `SHARED_LETTER_TEXTS` lets a report measure by how much.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lm_platform.tokenization.language_chars import has_language_char

PROBE_TEXTS: dict[str, tuple[str, ...]] = {
    "en": (
        "The river rose overnight and the ferry stayed tied to the dock until noon.",
        "She kept a ledger of every seed she planted, with the date and the weather beside it.",
        "Our train left twelve minutes late, so we missed the connection in the next town.",
        "A good map shows you what to leave out as clearly as what to put in.",
        "He fixed the bicycle chain with a paperclip and a borrowed pair of pliers.",
        "The committee will meet on Thursday to review the budget for the new library wing.",
        "Most of the apples fell before the frost, and the rest went into cider.",
        "If the signal drops again, restart the router and wait for the green light.",
        "The museum closed its east gallery while the roof was being repaired.",
        "Children learned to count by sorting buttons into jars of ten.",
        "In 1848 the harbour held more sailing ships than at any time before or since.",
        "Please send the signed form back by Friday, 5 p.m., at the latest.",
        "The recipe calls for two cups of flour, a pinch of salt and warm water.",
        "Wind turbines on the ridge turned slowly in the grey morning light.",
        "Nobody expected the quiet student to win the debate, but she did.",
        "The old lighthouse keeper wrote letters to ships that never answered.",
        "Traffic on the bridge was heavy because of the marathon downtown.",
        "Her grandmother's clock still chimes every quarter hour, a little off key.",
        "The report found that small schools scored as well as large ones.",
        "We walked along the cliffs until the fog rolled in from the sea.",
        '"Where are you going?" he asked. "Nowhere in particular," she replied.',
        "Prices rose 3.2% in March; analysts had expected 2.9%.",
    ),
    "code": (
        "def mean(values):\n    return sum(values) / len(values)\n",
        "for (int i = 0; i < n; ++i) { total += weights[i] * inputs[i]; }",
        "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
        "import numpy as np\nx = np.linspace(0, 1, 101)\ny = np.sin(2 * np.pi * x)\n",
        "const items = data.filter(d => d.active).map(d => d.id);",
        'if err != nil {\n\treturn nil, fmt.Errorf("open %s: %w", path, err)\n}',
        '#include <stdio.h>\nint main(void) { printf("hello\\n"); return 0; }',
        "class Stack:\n    def __init__(self):\n        self.items = []\n",
        'git commit -m "Fix off-by-one in the window size" && git push origin main',
        "let mut cache: HashMap<String, Vec<u8>> = HashMap::new();",
        'with open("log.txt", encoding="utf-8") as fh:\n    lines = fh.read().splitlines()\n',
        "public static void main(String[] args) { System.out.println(args.length); }",
        "docker run --rm -v $PWD:/work -w /work python:3.11 pytest -q",
        '{"name": "probe", "version": "1.0.0", "private": true}',
        "assert tokenizer.decode(tokenizer.encode(text)) == text",
        "x = [i ** 2 for i in range(10) if i % 2 == 0]",
        "fn add(a: i32, b: i32) -> i32 { a + b }",
        "CREATE INDEX idx_users_email ON users (email);",
        'while read -r line; do echo "${line^^}"; done < input.txt',
        "model.train(); optimizer.zero_grad(); loss.backward(); optimizer.step()",
        '<div class="card"><h2>Title</h2><p>Body text</p></div>',
    ),
    "ja": (
        "今日は朝から雨が降っていたので、図書館で一日中本を読んでいました。",
        "東京駅から新幹線に乗れば、大阪まで約二時間半で着きます。",
        "彼女は毎朝六時に起きて、近くの公園を三十分ほど散歩する。",
        "この町の人口は、ここ十年でおよそ二割減りました。",
        "会議の資料は金曜日までに全員へ送ってください。",
        "山の上の小さな神社には、古い石段が百段以上続いている。",
        "子どもたちは川で魚を捕まえて、夕方まで遊んでいた。",
        "新しい図書館は駅の北口から歩いて五分のところにあります。",
        "祖父は若いころ、漁師として北の海で働いていたそうだ。",
        "秋になると、この通りの銀杏並木が黄色く色づきます。",
        "電車が遅れたため、面接の時間に少し遅れてしまった。",
        "その小説は、ある港町で暮らす家族の三代にわたる物語だ。",
        "冷蔵庫に卵と牛乳しか残っていなかったので、オムレツを作った。",
        "夏休みの宿題は、最後の一週間でまとめて片付けた。",
        "この橋は明治時代に造られ、今も毎日多くの人が渡っている。",
        "パソコンの調子が悪いので、明日修理に出すつもりです。",
        "ラーメン屋の前には、昼前から長い行列ができていた。",
        "雪の日は道が滑りやすいので、ゆっくり歩きましょう。",
        "博物館では、江戸時代の着物や道具が展示されている。",
        "兄はギターを弾きながら、古い歌を静かに歌っていた。",
        "来月から、駅前のバスの時刻表が変わります。",
    ),
    "de": (
        "Der Zug nach München fährt heute von Gleis sieben ab.",
        "Im Winter liegt auf den Bergen oft bis in den April hinein Schnee.",
        "Meine Großmutter backt jeden Sonntag einen Apfelkuchen mit Streuseln.",
        "Die Straße wurde wegen Bauarbeiten für zwei Wochen gesperrt.",
        "Er hat das Fahrrad repariert, obwohl ihm das Werkzeug fehlte.",
        "Für die Prüfung müssen alle Unterlagen bis Freitag eingereicht werden.",
        "Über dem See hing am Morgen ein dichter, grauer Nebel.",
        "Die Kinder spielten im Hof, bis es dunkel wurde.",
        "Das Museum zeigt Gemälde aus drei Jahrhunderten.",
        "Nach dem Regen roch die Luft nach nassem Gras und Erde.",
        "Wir haben im Büro eine neue Kaffeemaschine bekommen.",
        "Die Bäckerei an der Ecke öffnet schon um sechs Uhr früh.",
        "Ich würde gern wissen, warum die Heizung wieder ausgefallen ist.",
        "Der Fluss trat über die Ufer und überschwemmte die Wiesen.",
        "Seine Schwester studiert Maschinenbau an der Technischen Universität.",
        "Bitte schließen Sie beim Verlassen des Raumes die Fenster.",
        "Die Äpfel aus unserem Garten sind in diesem Jahr besonders süß.",
        "Am Wochenende fahren wir mit dem Boot über den Bodensee.",
        "Der Bürgermeister eröffnete das Fest mit einer kurzen Rede.",
        "Im Keller fanden sie alte Briefe aus der Zeit vor dem Krieg.",
        "Größere Städte haben oft ein dichteres Netz an Buslinien.",
    ),
    "tr": (
        "Bugün sabah erkenden yağmur yağdı, sokaklar yine ıslak.",
        "İstanbul'dan Ankara'ya trenle gitmek yaklaşık dört saat sürüyor.",
        "Annem her pazar sabahı kahvaltıda menemen yapar.",
        "Kütüphane bu hafta sonu bakım çalışmaları nedeniyle kapalı olacak.",
        "Çocuklar parkta akşama kadar top oynadılar.",
        "Toplantı perşembe günü saat ikide başlayacak.",
        "Kışın bu köyün yolları karla kapanır.",
        "Öğretmen öğrencilere yeni bir şiir okudu.",
        "Dedem gençliğinde balıkçı olarak çalışmış.",
        "Bu kitabı üç günde bitirdim, çok beğendim.",
        "Şehrin merkezinde yeni bir müze açıldı.",
        "Otobüs durağında uzun bir kuyruk vardı.",
        "Bahçedeki elma ağaçları bu yıl çok meyve verdi.",
        "Sınav sonuçları gelecek hafta açıklanacak.",
        "Deniz kenarında yürüyüş yapmayı çok seviyorum.",
        "Bilgisayarım bozuldu, yarın tamire götüreceğim.",
        "Köprünün üzerinden geçen arabalar yavaşladı.",
        "Kardeşim üniversitede mühendislik okuyor.",
        "Pazardan domates, biber ve soğan aldık.",
        "Uçağımız sisli hava yüzünden bir saat gecikti.",
        "Gölün çevresinde sabahları koşan insanlar var.",
    ),
    "pl": (
        "Pociąg do Gdańska odjeżdża dziś z peronu trzeciego.",
        "W zimie w Tatrach często pada śnieg aż do kwietnia.",
        "Moja babcia w każdą niedzielę piecze szarlotkę.",
        "Ulica zostanie zamknięta na dwa tygodnie z powodu remontu.",
        "Dzieci bawiły się na dworze, aż zrobiło się ciemno.",
        "Wszystkie dokumenty należy złożyć do piątku.",
        "Nad jeziorem rano unosiła się gęsta mgła.",
        "Muzeum pokazuje obrazy z trzech stuleci.",
        "Po deszczu powietrze pachniało mokrą trawą.",
        "W biurze mamy nowy ekspres do kawy.",
        "Piekarnia na rogu jest otwarta od piątej rano.",
        "Rzeka wylała i zalała łąki nad brzegiem.",
        "Jego siostra studiuje na politechnice w Warszawie.",
        "Proszę zamknąć okna przed wyjściem z sali.",
        "Jabłka z naszego sadu są w tym roku bardzo słodkie.",
        "W weekend popłyniemy łodzią na drugi brzeg.",
        "W piwnicy znaleźli stare listy sprzed wojny.",
        "Autobus przyjechał z dziesięciominutowym zapasem czasu.",
        "Kupiliśmy na targu pomidory, paprykę i cebulę.",
        "Samolot wylądował mimo silnego wiatru.",
        "Każdego ranka biegam wzdłuż rzeki przez godzinę.",
    ),
    "ru": (
        "Поезд в Москву отправляется сегодня с седьмого пути.",
        "Зимой в горах снег лежит почти до самого апреля.",
        "Моя бабушка каждое воскресенье печёт яблочный пирог.",
        "Улицу закрыли на две недели из-за ремонта.",
        "Дети играли во дворе, пока не стемнело.",
        "Все документы нужно сдать до пятницы.",
        "Утром над озером висел густой серый туман.",
        "В музее выставлены картины трёх столетий.",
        "После дождя воздух пахнет мокрой травой.",
        "В нашем офисе поставили новую кофемашину.",
        "Булочная на углу открывается в шесть утра.",
        "Река вышла из берегов и затопила луга.",
        "Его сестра учится в техническом университете.",
        "Пожалуйста, закройте окна, когда будете уходить.",
        "Яблоки из нашего сада в этом году особенно сладкие.",
        "В выходные мы поплывём на лодке через озеро.",
        "В подвале нашли старые письма довоенных лет.",
        "Автобус опоздал на десять минут.",
        "На рынке мы купили помидоры, перец и лук.",
        "Самолёт приземлился, несмотря на сильный ветер.",
        "Каждое утро я бегаю вдоль реки полчаса.",
    ),
    "el": (
        "Το τρένο για τη Θεσσαλονίκη αναχωρεί σήμερα από την έβδομη αποβάθρα.",
        "Τον χειμώνα το χιόνι μένει στα βουνά σχεδόν μέχρι τον Απρίλιο.",
        "Η γιαγιά μου ψήνει κάθε Κυριακή μηλόπιτα.",
        "Ο δρόμος έκλεισε για δύο εβδομάδες λόγω έργων.",
        "Τα παιδιά έπαιζαν στην αυλή μέχρι να νυχτώσει.",
        "Όλα τα έγγραφα πρέπει να κατατεθούν έως την Παρασκευή.",
        "Το πρωί πάνω από τη λίμνη υπήρχε πυκνή ομίχλη.",
        "Το μουσείο εκθέτει πίνακες τριών αιώνων.",
        "Μετά τη βροχή ο αέρας μύριζε βρεγμένο χορτάρι.",
        "Στο γραφείο πήραμε καινούργια μηχανή καφέ.",
        "Ο φούρνος στη γωνία ανοίγει στις έξι το πρωί.",
        "Το ποτάμι πλημμύρισε και σκέπασε τα λιβάδια.",
        "Η αδελφή του σπουδάζει μηχανολογία στο Πολυτεχνείο.",
        "Παρακαλώ κλείστε τα παράθυρα όταν φεύγετε.",
        "Τα μήλα από τον κήπο μας είναι φέτος πολύ γλυκά.",
        "Το Σαββατοκύριακο θα πάμε με τη βάρκα στο νησί.",
        "Στο υπόγειο βρήκαν παλιά γράμματα από τον πόλεμο.",
        "Το λεωφορείο άργησε δέκα λεπτά.",
        "Στη λαϊκή αγοράσαμε ντομάτες, πιπεριές και κρεμμύδια.",
        "Το αεροπλάνο προσγειώθηκε παρά τον δυνατό άνεμο.",
        "Κάθε πρωί τρέχω μισή ώρα δίπλα στο ποτάμι.",
    ),
    "cs": (
        "Vlak do Brna jede dnes z koleje sedm.",
        "V zimě je na Šumavě sněhu dost skoro do dubna.",
        "Moje babička peče v neděli buchty.",
        "Ulice bude do jara zavřena kvůli stavbě.",
        "Děti běhaly po dvoře, dokud se nesetmělo.",
        "Ve čtvrtek se sejde rada obce.",
        "Nad řekou visela mlha.",
        "Pes běžel podle potoka až k mostu.",
        "Otec nese domů čerstvě chleba.",
        "Sestra studuje v Praze techniku.",
        "Po bouřce vše vonělo.",
        "Moje kočka spala na okně.",
        "Kde je teď ta kniha, co jsem včera četl?",
        "Most přes Vltavu je dnes zavřen.",
        "Bratr peče chleba.",
        "Kluci hrajou fotbal u školy každou středu.",
        "V Ostravě je nově most přes řeku.",
        "Ten dům na rohu je už sto let tady.",
        "Děda šel do lesa na houby.",
        "Čtyři psi běželi přes pole.",
        "Jen ještě chvilku, hned to bude.",
        "Ve městě je dnes trh s ovocem.",
    ),
}

# Texts in languages that share letters with V: they may change where those letters occur.
SHARED_LETTER_TEXTS: dict[str, tuple[str, ...]] = {
    "fr": (
        "Le musée ouvre à neuf heures et ferme à dix-huit heures.",
        "Elle a acheté du pain frais à la boulangerie près de la gare.",
        "Après la pluie, les enfants sont allés jouer dans la forêt.",
        "Le théâtre présente une nouvelle pièce chaque été.",
        "Nous avons visité le château et ses jardins à la française.",
        "Le médecin lui a conseillé de se reposer une semaine.",
        "La rivière a débordé et inondé les prés voisins.",
        "Il était une fois une reine qui vivait près de la mer.",
        "Les élèves préparent un exposé sur l'énergie solaire.",
        "Le café du coin sert des crêpes le dimanche matin.",
    ),
    "pt": (
        "O comboio para Lisboa parte às nove horas da manhã.",
        "A avó fez um bolo de laranja para o almoço de domingo.",
        "As crianças brincaram no jardim até ao anoitecer.",
        "O museu tem pinturas de três séculos diferentes.",
        "Depois da chuva, o ar cheirava a erva molhada.",
        "A padaria da esquina abre às seis da manhã.",
        "Ela estuda engenharia na universidade há dois anos.",
        "O rio transbordou e alagou os campos próximos.",
        "Compramos tomates, pimentões e cebolas na feira.",
        "A reunião foi adiada para a próxima terça-feira.",
    ),
    "es": (
        "El tren a Sevilla sale hoy del andén número siete.",
        "Mi abuela prepara una tarta de manzana cada domingo.",
        "La calle estará cerrada dos semanas por obras.",
        "Los niños jugaron en el patio hasta que anocheció.",
        "El museo expone cuadros de tres siglos distintos.",
        "Después de la lluvia, el aire olía a hierba mojada.",
        "La panadería de la esquina abre a las seis de la mañana.",
        "Su hermana estudia ingeniería en la universidad.",
        "El río se desbordó e inundó los campos cercanos.",
        "Compramos tomates, pimientos y cebollas en el mercado.",
    ),
}


@dataclass
class InvariantResult:
    """Outcome of `check_invariant`: probe texts compared, and those that encode differently."""

    language: str
    checked: int = 0  # probe texts without a character of V, compared
    skipped: int = 0  # probe texts holding a character of V (none in the bundled set)
    changed: list[dict] = field(default_factory=list)  # {"lang", "text", "base", "new"} per changed text

    @property
    def passed(self) -> bool:
        return self.checked > 0 and not self.changed

    def summary(self) -> dict:
        return {
            "passed": self.passed,
            "checked": self.checked,
            "skipped": self.skipped,
            "changed": len(self.changed),
            "examples": self.changed[:5],
        }


def _ids(tokenizer, text: str) -> list[int]:
    """Ids without special tokens, from a `tokenizers.Tokenizer` or a transformers tokenizer."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    return list(enc.ids) if hasattr(enc, "ids") else list(enc)


def check_invariant(
    base, extended, language: str, texts: dict[str, tuple[str, ...]] | None = None
) -> InvariantResult:
    """Encode every probe text without a character of `language`'s set V with `base` and `extended`
    (tokenizers.Tokenizer or transformers tokenizers) and report those whose ids differ."""
    result = InvariantResult(language)
    for lang, items in (texts or PROBE_TEXTS).items():
        for text in items:
            if has_language_char(text, language):
                result.skipped += 1
                continue
            result.checked += 1
            old, new = _ids(base, text), _ids(extended, text)
            if old != new:
                result.changed.append({"lang": lang, "text": text, "base": old, "new": new})
    return result
