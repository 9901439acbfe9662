"""The demo languages and their task phrasings: five native paraphrases per language of "count from {a} to {b}"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageInfo:
    """Metadata of a demo language: ISO 639-1 code, English and native names, script and writing direction."""

    code: str
    name: str
    native_name: str
    script: str
    direction: str = "ltr"


DEMO_LANGUAGES: dict[str, LanguageInfo] = {
    info.code: info
    for info in (
        LanguageInfo("en", "English", "English", "Latin"),
        LanguageInfo("fr", "French", "français", "Latin"),
        LanguageInfo("de", "German", "Deutsch", "Latin"),
        LanguageInfo("es", "Spanish", "español", "Latin"),
        LanguageInfo("it", "Italian", "italiano", "Latin"),
        LanguageInfo("pt", "Portuguese", "português", "Latin"),
        LanguageInfo("vi", "Vietnamese", "Tiếng Việt", "Latin"),
        LanguageInfo("sw", "Swahili", "Kiswahili", "Latin"),
        LanguageInfo("ru", "Russian", "русский", "Cyrillic"),
        LanguageInfo("zh", "Chinese (Simplified)", "中文", "Han"),
        LanguageInfo("ja", "Japanese", "日本語", "Japanese"),
        LanguageInfo("ko", "Korean", "한국어", "Hangul"),
        LanguageInfo("ar", "Arabic", "العربية", "Arabic", "rtl"),
        LanguageInfo("hi", "Hindi", "हिन्दी", "Devanagari"),
    )
}

# Five paraphrases per language of "count from {a} to {b}", written natively (not translated word by word). The
# numbers are Western digits in every language (the shared answer tokens); Arabic and Hindi text use them widely.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "Count from {a} to {b}:",
        "List the numbers from {a} to {b} in order:",
        "Write all the whole numbers from {a} up to {b}:",
        "Please count up from {a} to {b}:",
        "Write {a} to {b} in increasing order:",
    ),
    "fr": (
        "Compte de {a} à {b} :",
        "Écris les nombres de {a} à {b} dans l'ordre :",
        "Énumère tous les entiers de {a} à {b} :",
        "Compte jusqu'à {b} en partant de {a} :",
        "Les nombres de {a} à {b}, par ordre croissant :",
    ),
    "de": (
        "Zähle von {a} bis {b}:",
        "Schreibe die Zahlen von {a} bis {b} der Reihe nach:",
        "Nenne alle ganzen Zahlen von {a} bis {b}:",
        "Zähle bitte von {a} aufwärts bis {b}:",
        "Die Zahlen von {a} bis {b}, aufsteigend:",
    ),
    "es": (
        "Cuenta del {a} al {b}:",
        "Escribe los números del {a} al {b} en orden:",
        "Enumera todos los números enteros del {a} al {b}:",
        "Por favor, cuenta desde el {a} hasta el {b}:",
        "Los números del {a} al {b}, en orden creciente:",
    ),
    "it": (
        "Conta da {a} a {b}:",
        "Scrivi i numeri da {a} a {b} in ordine:",
        "Elenca tutti i numeri interi da {a} a {b}:",
        "Per favore, conta da {a} fino a {b}:",
        "I numeri da {a} a {b}, in ordine crescente:",
    ),
    "pt": (
        "Conte de {a} a {b}:",
        "Escreva os números de {a} a {b} em ordem:",
        "Liste todos os números inteiros de {a} a {b}:",
        "Por favor, conte de {a} até {b}:",
        "Os números de {a} a {b}, em ordem crescente:",
    ),
    "vi": (
        "Đếm từ {a} đến {b}:",
        "Liệt kê các số từ {a} đến {b} theo thứ tự:",
        "Viết tất cả các số nguyên từ {a} đến {b}:",
        "Hãy đếm từ {a} đến {b}:",
        "Các số từ {a} đến {b}, theo thứ tự tăng dần:",
    ),
    "sw": (
        "Hesabu kutoka {a} hadi {b}:",
        "Orodhesha namba kutoka {a} hadi {b} kwa mpangilio:",
        "Andika namba zote kamili kutoka {a} hadi {b}:",
        "Tafadhali hesabu kuanzia {a} mpaka {b}:",
        "Taja namba kutoka {a} hadi {b} kwa mpangilio wa kupanda:",
    ),
    "ru": (
        "Посчитай от {a} до {b}:",
        "Перечисли числа от {a} до {b} по порядку:",
        "Напиши все целые числа от {a} до {b}:",
        "Пожалуйста, сосчитай от {a} до {b}:",
        "Числа от {a} до {b} по возрастанию:",
    ),
    "zh": (
        "从{a}数到{b}：",
        "请按顺序列出从{a}到{b}的数字：",
        "写出从{a}到{b}的所有整数：",
        "请从{a}开始数到{b}：",
        "从小到大写出{a}到{b}：",
    ),
    "ja": (
        "{a}から{b}まで数えてください：",
        "{a}から{b}までの数字を順番に書いてください：",
        "{a}から{b}までの整数をすべて挙げてください：",
        "{a}から{b}まで数えて：",
        "{a}から{b}までの数を小さい順に並べてください：",
    ),
    "ko": (
        "{a}부터 {b}까지 세어 보세요:",
        "{a}부터 {b}까지의 숫자를 순서대로 쓰세요:",
        "{a}부터 {b}까지의 정수를 모두 나열하세요:",
        "{a}에서 {b}까지 세어 주세요:",
        "{a}부터 {b}까지 작은 수부터 차례로 쓰세요:",
    ),
    "ar": (
        "عد من {a} إلى {b}:",
        "اكتب الأعداد من {a} إلى {b} بالترتيب:",
        "اذكر جميع الأعداد الصحيحة من {a} إلى {b}:",
        "من فضلك، عد من {a} حتى {b}:",
        "الأعداد من {a} إلى {b} تصاعديًا:",
    ),
    "hi": (
        "{a} से {b} तक गिनती करो:",
        "{a} से {b} तक की संख्याएँ क्रम से लिखो:",
        "{a} से {b} तक के सभी पूर्णांक बताओ:",
        "कृपया {a} से {b} तक गिनिए:",
        "{a} से {b} तक बढ़ते क्रम में लिखो:",
    ),
}
