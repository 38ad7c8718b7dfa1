"""Clean Indonesian text for the test of a language the platform ships no settings for.

Written for lm_platform by its developers (not taken from any source), released under CC0-1.0: news,
encyclopedic notes, a recipe, a letter, a diary entry, a blog post, a story and a poem.
"""

ID_TEXTS = (
    "Pemerintah kota Bandung meresmikan taman baru di kawasan utara pada hari Sabtu pagi. Taman seluas dua "
    "hektare itu dilengkapi jalur pejalan kaki, tempat bermain anak, dan kolam kecil yang airnya berasal dari "
    "penampungan hujan. Wali kota mengatakan bahwa taman tersebut dibangun agar warga memiliki ruang terbuka "
    "yang dekat dengan permukiman. Menurutnya, selama ini banyak keluarga harus menempuh perjalanan jauh hanya "
    "untuk menikmati udara segar pada akhir pekan. Taman itu dibuka setiap hari dari pukul enam pagi "
    "hingga sembilan malam, dan pengunjung tidak dipungut biaya.",
    "Danau Toba adalah danau vulkanik terbesar di Asia Tenggara yang terletak di Provinsi Sumatera Utara. "
    "Danau ini terbentuk dari letusan gunung berapi raksasa sekitar tujuh puluh empat ribu tahun yang lalu. "
    "Di tengah danau terdapat Pulau Samosir, yang menjadi pusat kebudayaan masyarakat Batak Toba. Setiap tahun "
    "ribuan wisatawan datang untuk melihat rumah adat, mendengarkan musik tradisional, dan menikmati "
    "pemandangan perbukitan yang mengelilingi air danau yang tenang. Kapal penyeberangan dari Parapat "
    "berangkat hampir setiap jam, sehingga pulau itu mudah dicapai.",
    "Untuk membuat nasi goreng sederhana, siapkan sepiring nasi putih yang sudah dingin, dua siung bawang "
    "putih, tiga siung bawang merah, satu butir telur, dan kecap manis secukupnya. Haluskan bawang, lalu "
    "tumis dengan sedikit minyak sampai harum. Masukkan telur dan aduk hingga setengah matang, kemudian "
    "tambahkan nasi. Tuangkan kecap, beri garam dan merica, lalu aduk terus di atas api besar selama beberapa "
    "menit. Sajikan selagi hangat dengan irisan mentimun dan kerupuk.",
    "Yogyakarta, 12 Maret\n\nAdikku yang baik,\n\nSemoga kamu sehat dan tetap rajin belajar di kota yang "
    "jauh itu. Di rumah semua baik-baik saja. Ibu masih berjualan kue setiap pagi di pasar, dan Bapak sudah "
    "mulai memperbaiki atap dapur yang bocor sejak musim hujan kemarin. Kami sering membicarakan kamu saat "
    "makan malam. Kalau liburan nanti kamu pulang, jangan lupa membawa buku-buku yang ingin kamu pinjamkan "
    "kepada sepupu kita.\n\nSalam sayang,\nKakakmu",
    "Senin, 4 Juli\n\nHari ini hujan turun sejak subuh sehingga aku terlambat tiba di kantor. Jalanan macet "
    "dan angkot yang biasa aku tumpangi penuh sesak. Di kantor, rapat pagi ditunda karena listrik sempat "
    "padam. Sore harinya aku menyelesaikan laporan yang sudah tertunda selama seminggu. Rasanya lega sekali. "
    "Malam ini aku ingin tidur lebih awal, karena besok harus berangkat ke luar kota untuk bertemu dengan "
    "beberapa petani kopi.",
    "Banyak orang bertanya kepada saya bagaimana cara memulai berkebun di lahan yang sempit. Jawabannya "
    "sebenarnya cukup mudah: mulailah dari pot dan tanaman yang tidak rewel. Cabai, tomat, dan daun bawang "
    "bisa tumbuh dengan baik di teras rumah asalkan mendapat sinar matahari paling sedikit enam jam sehari. "
    "Gunakan tanah yang gembur dan jangan menyiram terlalu banyak. Dalam beberapa minggu, kamu akan merasakan "
    "senangnya memetik hasil kebun sendiri.",
    "Pak Darto sudah tiga puluh tahun menjadi tukang perahu di sungai itu. Setiap pagi ia menyeberangkan "
    "anak-anak sekolah, pedagang sayur, dan sesekali seorang guru yang membawa tumpukan buku. Ia jarang "
    "berbicara, tetapi semua orang mengenalnya. Suatu hari, ketika air sungai naik tinggi setelah hujan "
    "deras, ia menolak menyeberangkan siapa pun. Orang-orang kesal, namun sore itu mereka melihat sebatang "
    "pohon besar hanyut tepat di tempat perahunya biasa lewat.",
    "Bahasa Indonesia ditetapkan sebagai bahasa persatuan dalam Sumpah Pemuda pada tahun 1928. Bahasa ini "
    "berakar pada bahasa Melayu yang sudah lama digunakan sebagai bahasa perdagangan di berbagai pelabuhan "
    "Nusantara. Setelah kemerdekaan, bahasa Indonesia menjadi bahasa resmi negara dan digunakan dalam "
    "pendidikan, pemerintahan, serta media massa. Kini bahasa tersebut dipakai oleh lebih dari dua ratus "
    "juta orang, meskipun sebagian besar penuturnya juga menguasai bahasa daerah masing-masing. Kosakatanya "
    "terus bertambah dengan serapan dari bahasa Jawa, Belanda, Arab, dan Inggris.",
    "Harga beras di sejumlah pasar tradisional di Jawa Timur mengalami kenaikan dalam dua pekan terakhir. "
    "Para pedagang menyebut pasokan dari daerah penghasil berkurang karena panen mundur akibat cuaca yang "
    "tidak menentu. Dinas perdagangan setempat berjanji akan menggelar operasi pasar untuk menekan harga. "
    "Sementara itu, sebagian warga memilih membeli dalam jumlah kecil sambil menunggu harga kembali normal "
    "menjelang musim panen berikutnya. Pemerintah provinsi juga meminta para pedagang besar untuk tidak "
    "menimbun beras di gudang mereka.",
    "Di tepi sawah yang menguning\naku duduk menunggu senja\nangin membawa bau jerami\ndan suara burung "
    "pulang ke sarang\n\nibu memanggil dari dapur\nasap tipis naik ke langit\naku belum ingin beranjak\n"
    "sebab hari ini terlalu indah\nuntuk segera kuakhiri\n\nbesok aku akan pergi jauh\nke kota yang tak "
    "kukenal\ntetapi sawah ini akan ikut\ndi dalam saku ingatanku",
    "Komodo adalah spesies kadal terbesar di dunia yang hanya hidup di beberapa pulau di Nusa Tenggara "
    "Timur, antara lain Pulau Komodo, Rinca, dan Flores. Hewan ini dapat tumbuh hingga tiga meter panjangnya "
    "dan memangsa rusa, babi hutan, bahkan kerbau. Air liurnya mengandung bakteri dan racun yang membuat "
    "mangsanya lemah. Untuk melindungi habitatnya, pemerintah mendirikan Taman Nasional Komodo pada tahun "
    "1980, yang kemudian diakui sebagai situs warisan dunia. Pengunjung hanya boleh berjalan di kawasan itu "
    "bersama penjaga taman yang membawa tongkat bercabang.",
    "Saya baru saja menyelesaikan perjalanan bersepeda dari Solo ke Semarang, dan ternyata pengalaman itu "
    "jauh lebih menyenangkan daripada yang saya bayangkan. Jalurnya memang menanjak di beberapa bagian, "
    "tetapi pemandangan kebun teh dan desa-desa kecil membuat rasa lelah cepat hilang. Saya berhenti di "
    "warung pinggir jalan untuk makan soto dan minum teh manis. Pemilik warung bercerita bahwa setiap akhir "
    "pekan banyak pesepeda yang lewat di depan rumahnya. Bulan depan saya berencana mencoba jalur yang lebih "
    "panjang menuju pantai selatan.",
)
